# Golden values for iop_research.survival.competing on the UIS data (shared datasets dir).
# Call (repo root): Rscript --vanilla tests/r/cr_uis.R <datasets_dir> <out_json>
#
# Competing-risks construction (mirrored in tests/test_competing.py::uis_cr):
#   time   = TIME (days from admission to return to drug use or censoring)
#   status = 1 relapse after leaving residential treatment (CENSOR == 1 and TIME >  LEN.T)
#            2 relapse while still in treatment            (CENSOR == 1 and TIME <= LEN.T)
#            0 censored                                     (CENSOR == 0)
# i.e. the type of the first relapse; group = TREAT (0 short, 1 long), strata = SITE.
suppressPackageStartupMessages({library(survival); library(cmprsk)})
source("tests/r/cr_json.R")
args <- commandArgs(trailingOnly = TRUE)
u <- read.csv(file.path(args[1], "uis.csv"))
out <- args[2]
u$status <- ifelse(u$CENSOR == 0, 0, ifelse(u$TIME > u$LEN.T, 1, 2))
times <- c(30, 90, 180, 365, 730)

ci <- cuminc(u$TIME, u$status, u$TREAT)
ci_str <- cuminc(u$TIME, u$status, u$TREAT, strata = u$SITE)
tp <- timepoints(ci, times)
cif <- list()
for (nm in rownames(tp$est)) {
  cif[[nm]] <- list(est = as_array(unname(tp$est[nm, ])), var = as_array(unname(tp$var[nm, ])))
}
X <- as.matrix(u[, c("AGE", "BECK", "NDT", "IV3", "TREAT", "SITE")])
fit1 <- crr(u$TIME, u$status, X, failcode = 1, gtol = 1e-10, maxiter = 50)
fit2 <- crr(u$TIME, u$status, X, failcode = 2, gtol = 1e-10, maxiter = 50)
fgd <- finegray(Surv(TIME, factor(status)) ~ ., id = ID,
                data = u[, c("ID", "TIME", "status", "AGE", "BECK", "NDT", "IV3", "TREAT", "SITE")], etype = "1")
fg <- coxph(Surv(fgstart, fgstop, fgstatus) ~ AGE + BECK + NDT + IV3 + TREAT + SITE, weights = fgwt,
            cluster = ID, data = fgd, ties = "breslow")

write_json(list(
  times = as_array(times),
  cif = cif,
  tests = list(cause = as_array(rownames(ci$Tests)), stat = as_array(unname(ci$Tests[, "stat"])),
               pv = as_array(unname(ci$Tests[, "pv"]))),
  tests_strat = list(stat = as_array(unname(ci_str$Tests[, "stat"])), pv = as_array(unname(ci_str$Tests[, "pv"]))),
  crr1 = list(terms = as_array(names(fit1$coef)), coef = as_array(unname(fit1$coef)), se = as_array(sqrt(diag(fit1$var)))),
  crr2 = list(terms = as_array(names(fit2$coef)), coef = as_array(unname(fit2$coef)), se = as_array(sqrt(diag(fit2$var)))),
  finegray = list(coef = as_array(unname(coef(fg))), robust_se = as_array(unname(sqrt(diag(fg$var)))))
), out)

# Golden values for iop_research.survival.competing on simulated IOP retention data and edge cases.
# Data: tests/golden/data/cr_sim.csv and cr_edge.csv, written by tests/r/make_cr_data.py.
# Call (repo root): Rscript --vanilla tests/r/cr_sim.R <datasets_dir> <out_json>
#   status 0 = censored, 1 = dropped out, 2 = completed, 3 = transferred (rare).
suppressPackageStartupMessages({library(survival); library(cmprsk)})
source("tests/r/cr_json.R")
args <- commandArgs(trailingOnly = TRUE)
out <- args[2]

d <- read.csv("tests/golden/data/cr_sim.csv")
times <- c(7, 14, 30, 45, 60, 90)

cif_block <- function(fit, times) {
  tp <- timepoints(fit, times)
  res <- list()
  for (nm in rownames(tp$est)) {
    res[[nm]] <- list(est = as_array(unname(tp$est[nm, ])), var = as_array(unname(tp$var[nm, ])))
  }
  res
}
tests_block <- function(fit) {
  tt <- fit$Tests
  list(cause = as_array(rownames(tt)), stat = as_array(unname(tt[, "stat"])),
       pv = as_array(unname(tt[, "pv"])), df = as_array(unname(tt[, "df"])))
}

# 1. cuminc by programme, unstratified and stratified by female
ci_prog <- cuminc(d$days, d$status, d$program)
ci_prog_str <- cuminc(d$days, d$status, d$program, strata = d$female)
ci_mat <- cuminc(d$days, d$status, d$mat)
ci_prog_rho1 <- cuminc(d$days, d$status, d$program, rho = 1)
# full step function of one curve (programme A, cause 1)
full <- ci_prog[["A 1"]]

# survfit multi-state: same point estimates (AJ), infinitesimal-jackknife SEs
sf <- survfit(Surv(days, factor(status)) ~ program, data = d)
ssf <- summary(sf, times = times)
sf_est <- list()
for (g in c("A", "B", "C")) {
  rows <- ssf$strata == paste0("program=", g)
  sf_est[[g]] <- list(p1 = as_array(ssf$pstate[rows, 2]), p2 = as_array(ssf$pstate[rows, 3]),
                      se1 = as_array(ssf$std.err[rows, 2]))
}

# weighted Aalen-Johansen (non-integer case weights): point estimates only
d$w <- 1 + 0.5 * d$female + 0.25 * d$mat
sfw <- summary(survfit(Surv(days, factor(status)) ~ program, data = d, weights = w), times = times)
sfw_est <- list()
for (g in c("A", "B", "C")) {
  rows <- sfw$strata == paste0("program=", g)
  sfw_est[[g]] <- list(p1 = as_array(sfw$pstate[rows, 2]), p3 = as_array(sfw$pstate[rows, 4]))
}

# 2. crr: dropout (cause 1) and the rare cause 3 (transfer)
X <- cbind(age_c = d$age_c, female = d$female, mat = d$mat, progB = as.numeric(d$program == "B"))
crr1 <- crr(d$days, d$status, X, failcode = 1, gtol = 1e-10, maxiter = 50)
crr1_default <- crr(d$days, d$status, X, failcode = 1)
crr3 <- crr(d$days, d$status, X[, c("mat", "female")], failcode = 3, gtol = 1e-10, maxiter = 50)

# finegray + coxph (Breslow ties): same coefficients as crr
fgd <- finegray(Surv(days, factor(status)) ~ ., id = id, data = data.frame(d[, c("id", "days", "status", "age_c", "female", "mat")],
                progB = as.numeric(d$program == "B")), etype = "1")
fgfit <- coxph(Surv(fgstart, fgstop, fgstatus) ~ age_c + female + mat + progB, weights = fgwt, cluster = id,
               data = fgd, ties = "breslow", robust = TRUE)

# cause-specific Cox for dropout (other causes censored), Efron ties
cs1 <- coxph(Surv(days, status == 1) ~ age_c + female + mat + I(as.numeric(program == "B")), data = d)

# 3. edge cases: cause 2 absent in arm b; ties across causes and censoring
e <- read.csv("tests/golden/data/cr_edge.csv")
ci_edge <- cuminc(e$days, e$status, e$arm)
etimes <- c(3, 5, 8, 12, 20, 25, 30)

write_json(list(
  times = as_array(times),
  prog = list(cif = cif_block(ci_prog, times), tests = tests_block(ci_prog)),
  prog_strat = list(tests = tests_block(ci_prog_str)),
  prog_rho1 = list(tests = tests_block(ci_prog_rho1)),
  mat = list(cif = cif_block(ci_mat, times), tests = tests_block(ci_mat)),
  full_A1 = list(time = as_array(full$time), est = as_array(full$est), var = as_array(full$var)),
  survfit = sf_est,
  survfit_weighted = sfw_est,
  crr1 = list(terms = as_array(names(crr1$coef)), coef = as_array(unname(crr1$coef)),
              se = as_array(sqrt(diag(crr1$var))), loglik = crr1$loglik, loglik_null = crr1$loglik.null,
              coef_default_gtol = as_array(unname(crr1_default$coef)),
              se_default_gtol = as_array(sqrt(diag(crr1_default$var)))),
  crr3 = list(terms = as_array(names(crr3$coef)), coef = as_array(unname(crr3$coef)),
              se = as_array(sqrt(diag(crr3$var)))),
  cause_specific1 = list(coef = as_array(unname(coef(cs1))), se = as_array(unname(sqrt(diag(cs1$var))))),
  finegray = list(coef = as_array(unname(coef(fgfit))), robust_se = as_array(unname(sqrt(diag(fgfit$var))))),
  edge = list(times = as_array(etimes), cif = cif_block(ci_edge, etimes), tests = tests_block(ci_edge))
), out)

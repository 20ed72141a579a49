# Golden values for iop_research.designs.causal.landmark_analysis on UIS (shared datasets dir).
# Call (repo root): Rscript --vanilla tests/r/causal_landmark.R <datasets_dir> <out_json>
#
# Exposure fixed at the landmark L: in_tx = still in residential treatment at day L (LEN.T > L).
# Landmark sample: TIME > L; clock reset: time since landmark = TIME - L; event = CENSOR.
suppressPackageStartupMessages(library(survival))
source("tests/r/cr_json.R")
args <- commandArgs(trailingOnly = TRUE)
u <- read.csv(file.path(args[1], "uis.csv"))
out <- args[2]
res <- list()
for (L in c(30, 90)) {
  d <- u[u$TIME > L, ]
  d$in_tx <- as.numeric(d$LEN.T > L)
  f <- coxph(Surv(TIME - L, CENSOR) ~ in_tx + AGE + BECK, data = d)
  fr <- coxph(Surv(TIME - L, CENSOR) ~ in_tx + AGE + BECK, data = d, cluster = SITE * 1000 + TREAT * 100 + (AGE %/% 10))
  res[[paste0("L", L)]] <- list(
    n = nrow(d), n_events = sum(d$CENSOR), n_excluded_event = sum(u$TIME <= L & u$CENSOR == 1),
    n_excluded_censored = sum(u$TIME <= L & u$CENSOR == 0),
    coef = as_array(unname(coef(f))), se = as_array(unname(sqrt(diag(f$var)))),
    robust_coef = as_array(unname(coef(fr))), robust_se = as_array(unname(sqrt(diag(fr$var)))))
}
write_json(res, out)

# Golden values for iop_research.designs.msm_cox: marginal structural Cox model with stabilised time-varying
# IPT weights, written out with glm, ave(cumprod) and coxph. Reads tests/golden/data/msm.csv (tests/msm_sim.py,
# seed 20261207, 500 people). Also the truncated weights and the model_rows variant, and the biased
# time-varying Cox fits for comparison.
# Call (repo root): Rscript --vanilla tests/r/msm.R <datasets_dir> <out_json>
suppressPackageStartupMessages(library(survival))
source("tests/r/cr_json.R")
args <- commandArgs(trailingOnly = TRUE)
out <- args[2]
d <- read.csv("tests/golden/data/msm.csv")
d <- d[order(d$pid, d$start), ]
ctl <- glm.control(epsilon = 1e-12, maxit = 100)

msm <- function(rows, truncate = NULL) {
  den <- glm(on_mat ~ mat_last_week + positive_screen, family = binomial, data = d[rows, ], control = ctl)
  num <- glm(on_mat ~ mat_last_week, family = binomial, data = d[rows, ], control = ctl)
  f <- rep(1, nrow(d))
  pd <- fitted(den); pn <- fitted(num); a <- d$on_mat[rows]
  f[rows] <- ifelse(a == 1, pn / pd, (1 - pn) / (1 - pd))
  w <- ave(f, d$pid, FUN = cumprod)
  if (!is.null(truncate)) {
    q <- quantile(w, c(truncate, 1 - truncate), type = 7)
    w <- pmin(pmax(w, q[1]), q[2])
  }
  d$w <- w
  fit <- coxph(Surv(start, stop, event) ~ on_mat, data = d, weights = w, cluster = pid)
  list(coef = unname(coef(fit)), se = unname(sqrt(diag(fit$var))), max_w = max(w), mean_w = mean(w),
       w_head = as_array(w[1:20]))
}
tv <- function(f) {
  fit <- coxph(f, data = d, cluster = pid)
  list(coef = as_array(unname(coef(fit))), se = as_array(unname(sqrt(diag(fit$var)))))
}
write_json(list(
  all_rows = msm(rep(TRUE, nrow(d))),
  truncated = msm(rep(TRUE, nrow(d)), 0.01),
  untreated_before = msm(d$mat_last_week == 0),
  tv_unadjusted = tv(Surv(start, stop, event) ~ on_mat),
  tv_adjusted = tv(Surv(start, stop, event) ~ on_mat + positive_screen)
), out)

# Golden standard errors for iop_research.designs.adjusted's influence-function intervals,
# computed independently in R as the infinitesimal jackknife: the derivative of each estimator
# in one row's case weight (central finite difference, eps = 1e-5), row by row, with the whole
# procedure refitted (outcome or propensity model included); SE = sqrt(sum_j D_j^2).
#   g-computation: theta_a(t) = weighted.mean(survfit(coxph(..., weights = w), newdata = d with
#     mat = a)$surv, w), with and without strata(site);
#   IPTW: glm(mat ~ ..., quasibinomial, weights = w), stabilised ATE weights sw, and
#     survfit(Surv(days, relapse) ~ mat, weights = w * sw).
# Data: tests/golden/data/adjusted_if.csv (tests/r/make_adjusted_data.py). Usage (repository root):
#   Rscript --vanilla tests/r/adjusted_if.R <datasets_dir> <out_json>
suppressPackageStartupMessages(library(survival))
args <- commandArgs(trailingOnly = TRUE)
out <- args[2]
source("tests/r/json_arrays.R")

d <- read.csv("tests/golden/data/adjusted_if.csv")
d$site <- factor(d$site)
n <- nrow(d)
times <- c(30, 90, 180)
tau <- 180
step_at <- function(t, s, at) { i <- findInterval(at, t); ifelse(i == 0, 1, s[pmax(i, 1)]) }
rmst <- function(t, s, tau) { keep <- t < tau; tt <- c(0, t[keep], tau); ss <- c(1, s[keep]); sum(diff(tt) * ss) }
grid <- sort(unique(c(d$days[d$relapse == 1], times, tau)))

# every estimator returns c(S_0(times), S_1(times), RMST_0, RMST_1) for case weights w
avg_curve <- function(sf, w) {
  s <- apply(as.matrix(sf$surv), 2, function(v) step_at(sf$time, v, grid))
  drop(s %*% w) / sum(w)
}
summarise <- function(curves) {
  c(unlist(lapply(curves, function(s) step_at(grid, s, times))),
    vapply(curves, function(s) rmst(grid, s, tau), 0))
}
gcomp <- function(w) {
  fit <- coxph(Surv(days, relapse) ~ mat + age + severe + site, data = d, weights = w)
  summarise(lapply(c(0, 1), function(a) { nd <- d; nd$mat <- a; avg_curve(survfit(fit, newdata = nd), w) }))
}
gcomp_strata <- function(w) {
  fit <- coxph(Surv(days, relapse) ~ mat + age + severe + strata(site), data = d, weights = w)
  summarise(lapply(c(0, 1), function(a) {
    tot <- 0
    for (st in levels(d$site)) {
      rows <- d$site == st
      sub <- d[rows, ]; sub$mat <- a; sub$site <- NULL
      sf <- survfit(fit, newdata = sub)
      s <- sf[which(names(sf$strata) %in% c(st, paste0("site=", st))), ]
      tot <- tot + drop(apply(as.matrix(s$surv), 2, function(v) step_at(s$time, v, grid)) %*% w[rows])
    }
    tot / sum(w)
  }))
}
iptw <- function(w) {
  ps <- fitted(glm(mat ~ age + severe + site, family = quasibinomial, data = d, weights = w))
  p1 <- weighted.mean(d$mat, w)
  sw <- ifelse(d$mat == 1, p1 / ps, (1 - p1) / (1 - ps))
  sf <- survfit(Surv(days, relapse) ~ mat, data = d, weights = w * sw)
  summarise(lapply(1:2, function(k) step_at(sf[k]$time, sf[k]$surv, grid)))
}
ij <- function(f, eps = 1e-5) {
  est <- f(rep(1, n))
  D <- t(vapply(seq_len(n), function(j) {
    up <- rep(1, n); up[j] <- 1 + eps
    dn <- rep(1, n); dn[j] <- 1 - eps
    (f(up) - f(dn)) / (2 * eps)
  }, est))
  k <- length(times)
  diff_inf <- D[, k + seq_len(k)] - D[, seq_len(k)]
  list(estimate = est, se = sqrt(colSums(D^2)), se_difference = sqrt(colSums(diff_inf^2)),
       se_rmst_difference = sqrt(sum((D[, 2 * k + 2] - D[, 2 * k + 1])^2)))
}
res <- list(R_version = R.version.string, survival = as.character(packageVersion("survival")),
            times = times, tau = tau, layout = "S0(times), S1(times), RMST0, RMST1",
            gcomp = ij(gcomp), gcomp_strata = ij(gcomp_strata), iptw = ij(iptw))
writeLines(to_json(res), out)

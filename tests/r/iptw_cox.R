# Golden values for iop_research.designs.iptw_cox (IPTW Cox with the M-estimation sandwich) on HELP.
# Call (repo root): Rscript --vanilla tests/r/iptw_cox.R <datasets_dir> <out_json>
#
# Same analysis sample and propensity model as tests/r/causal_help.R. The stacked estimating
# equations are written out here (no CRAN package for them is installed):
#   psi_alpha_i = x_i (a_i - e_i); psi_pi_i = a_i - pi (stabilised ATE only);
#   eta_i = w_i * s_i, s_i = residuals(coxph_fit, type = "score") (unweighted score residual).
# J = sum_i d Phi_i / d theta: -X' diag(e(1-e)) X; -n; dU/dalpha = sum_j eta_j dlogw_j/dalpha';
# dU/dpi = sum_j eta_j dlogw_j/dpi; dU/dbeta = -solve(naive.var). V = J^-1 (Phi' Phi) J^-T.
suppressPackageStartupMessages(library(survival))
source("tests/r/cr_json.R")
args <- commandArgs(trailingOnly = TRUE)
source("tests/r/help_cc.R")
h <- read_help_cc(args[1])
out <- args[2]

ps_fit <- glm(treat01 ~ age + female + substance + cesd + homeless01, family = binomial, data = h)
x <- model.matrix(ps_fit)
a <- h$treat01
e <- unname(fitted(ps_fit))
p1 <- mean(a)
n <- nrow(h)

m_estimation <- function(estimand, stabilized, ties) {
  tr <- a == 1
  if (estimand == "ATE") {
    w <- ifelse(tr, 1 / e, 1 / (1 - e))
    if (stabilized) w <- w * ifelse(tr, p1, 1 - p1)
    g <- ifelse(tr, -(1 - e), e) * x
    hh <- if (stabilized) ifelse(tr, 1 / p1, -1 / (1 - p1)) else NULL
  } else if (estimand == "ATT") {
    w <- ifelse(tr, 1, e / (1 - e)); g <- ifelse(tr, 0, 1) * x; hh <- NULL
  } else {
    w <- ifelse(tr, 1 - e, e); g <- ifelse(tr, -e, 1 - e) * x; hh <- NULL
  }
  h$w <- w
  fit <- coxph(Surv(daysanysub, anysubstatus) ~ treat01, data = h, weights = w, robust = TRUE, ties = ties)
  s <- as.matrix(residuals(fit, type = "score"))
  eta <- w * s
  p <- ncol(x); k <- p + !is.null(hh); q <- ncol(eta)
  phi <- cbind(x * (a - e), if (!is.null(hh)) (a - p1), eta)
  J <- matrix(0, k + q, k + q)
  J[1:p, 1:p] <- -crossprod(x, x * (e * (1 - e)))
  J[(k + 1):(k + q), 1:p] <- crossprod(eta, g)
  if (!is.null(hh)) {
    J[p + 1, p + 1] <- -n
    J[(k + 1):(k + q), p + 1] <- crossprod(eta, hh)
  }
  J[(k + 1):(k + q), (k + 1):(k + q)] <- -solve(fit$naive.var)
  Ji <- solve(J)
  V <- Ji %*% crossprod(phi) %*% t(Ji)
  list(coef = unname(coef(fit)), se_m = sqrt(diag(V))[(k + 1):(k + q)],
       se_robust = unname(sqrt(diag(fit$var))), se_naive = unname(sqrt(diag(fit$naive.var))))
}

write_json(list(
  ate_s = m_estimation("ATE", TRUE, "efron"),
  ate = m_estimation("ATE", FALSE, "efron"),
  att = m_estimation("ATT", FALSE, "efron"),
  overlap = m_estimation("overlap", FALSE, "efron"),
  ate_s_breslow = m_estimation("ATE", TRUE, "breslow")
), out)

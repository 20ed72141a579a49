# Golden values for iop_research.longitudinal.programme_rates: indirect standardisation with funnel limits,
# written out. Reads tests/golden/data/programmes.csv (tests/programme_sim.py, seed 20261207).
# Expected = sum of glm(completed ~ age + severe, binomial) fitted probabilities per programme; O/E with
# Garwood exact limits qgamma(a/2, O)/E, qgamma(1-a/2, O+1)/E; funnel limits by Spiegelhalter (2005) A.1.1:
# r = qpois(p, E), alpha = (ppois(r, E) - p) / (ppois(r, E) - ppois(r - 1, E)), limit = max(r - alpha, 0) / E.
# Call (repo root): Rscript --vanilla tests/r/programme_rates.R <datasets_dir> <out_json>
source("tests/r/cr_json.R")
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv("tests/golden/data/programmes.csv")
fit <- glm(completed ~ age + severe, family = binomial, data = d, control = glm.control(epsilon = 1e-12, maxit = 100))
d$p <- fitted(fit)
progs <- sort(unique(d$programme))
O <- tapply(d$completed, d$programme, sum)[progs]
E <- tapply(d$p, d$programme, sum)[progs]
n <- tapply(d$p, d$programme, length)[progs]
ybar <- mean(d$completed)
lim <- function(p, e) {
  r <- qpois(p, e)
  fr <- ppois(r, e); fr1 <- ppois(r - 1, e)
  alpha <- ifelse(fr > fr1, (fr - p) / (fr - fr1), 0)
  pmax(r - alpha, 0) / e
}
write_json(list(
  programme = as_array(progs), n = as_array(unname(n)), observed = as_array(unname(O)), expected = as_array(unname(E)),
  oe = as_array(unname(O / E)),
  oe_low = as_array(unname(ifelse(O > 0, qgamma(0.025, O) / E, 0))), oe_high = as_array(unname(qgamma(0.975, O + 1) / E)),
  rate = as_array(unname(O / E * ybar)),
  l95_low = as_array(unname(lim(0.025, E))), l95_high = as_array(unname(lim(0.975, E))),
  l998_low = as_array(unname(lim(0.001, E))), l998_high = as_array(unname(lim(0.999, E))),
  coef = as_array(unname(coef(fit))), se = as_array(unname(sqrt(diag(vcov(fit)))))
), args[2])

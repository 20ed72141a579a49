# Golden values for iop_research.designs.landmark_analysis(switch_col=...): per-protocol landmark Cox with
# inverse probability of censoring weights, written out with glm, survSplit and coxph.
# Reads tests/golden/data/ipcw_landmark.csv (tests/ipcw_sim.py, seed 20261207). Landmark L = 30.
# Call (repo root): Rscript --vanilla tests/r/ipcw_landmark.R <datasets_dir> <out_json>
#
# Steps: t = days - L; S = switch_day - L; censored at S when S < t (an event on day S counts).
# Switching model per arm on person-days 1..min(t, S): glm(switched ~ u + age + I(day/100), binomial)
# (denominator), glm(switched ~ I(day/100), binomial) (numerator). W_i(d) = prod_{k<d} (1-p_num)/(1-p_den).
# Rows split at every event day; row (a, b] carries W_i(b). coxph(Surv(a, b, ev) ~ on_mat_at_l,
# weights = W, cluster = pid), robust. Unstabilised (stabilized=False): the same without the numerator,
# W_i(d) = prod_{k<d} 1/(1-p_den).
suppressPackageStartupMessages(library(survival))
source("tests/r/cr_json.R")
args <- commandArgs(trailingOnly = TRUE)
out <- args[2]
d <- read.csv("tests/golden/data/ipcw_landmark.csv")
L <- 30
d$t <- d$days - L
d$S <- d$switch_day - L
sw_before <- !is.na(d$S) & d$S < d$t
d$stop <- ifelse(sw_before, d$S, d$t)
d$ev <- ifelse(sw_before, 0, d$event)

# person-days at risk of switching
last <- pmin(d$t, ifelse(is.na(d$S), Inf, d$S))
pd <- d[rep(seq_len(nrow(d)), last), c("pid", "on_mat_at_l", "u", "age", "S")]
pd$day <- unlist(lapply(last, seq_len))
pd$switched <- as.numeric(!is.na(pd$S) & pd$day == pd$S)

maxd <- max(d$t)
logw <- matrix(0, nrow(d), maxd)  # column k: log(stay_num / stay_den) on day k
logw_u <- matrix(0, nrow(d), maxd)  # unstabilised: -log(stay_den)
for (a in 0:1) {
  sub <- pd[pd$on_mat_at_l == a, ]
  den <- glm(switched ~ u + age + I(day / 100), family = binomial, data = sub, control = glm.control(epsilon = 1e-12, maxit = 100))
  num <- glm(switched ~ I(day / 100), family = binomial, data = sub, control = glm.control(epsilon = 1e-12, maxit = 100))
  rows <- which(d$on_mat_at_l == a)
  for (k in seq_len(maxd)) {
    nd <- data.frame(u = d$u[rows], age = d$age[rows], day = k)
    pden <- predict(den, newdata = nd, type = "response")
    pnum <- predict(num, newdata = nd, type = "response")
    logw[rows, k] <- log(1 - pnum) - log(1 - pden)
    logw_u[rows, k] <- -log(1 - pden)
  }
}
cum <- t(apply(logw, 1, cumsum))  # cum[i, k] = sum over days 1..k
cum_u <- t(apply(logw_u, 1, cumsum))

evdays <- sort(unique(d$stop[d$ev == 1]))
split <- survSplit(Surv(stop, ev) ~ pid + on_mat_at_l, data = transform(d, start0 = 0), cut = evdays,
                   start = "a", end = "b", event = "ev")
idx <- match(split$pid, d$pid)
split$w <- ifelse(split$b >= 2, exp(cum[cbind(idx, pmax(split$b - 1, 1))]), 1)
split$w_u <- ifelse(split$b >= 2, exp(cum_u[cbind(idx, pmax(split$b - 1, 1))]), 1)
fit <- coxph(Surv(a, b, ev) ~ on_mat_at_l, data = split, weights = w, cluster = pid)
fit_u <- coxph(Surv(a, b, ev) ~ on_mat_at_l, data = split, weights = w_u, cluster = pid)
unw <- coxph(Surv(stop, ev) ~ on_mat_at_l, data = d, cluster = pid)
write_json(list(
  coef = unname(coef(fit)), se = unname(sqrt(diag(fit$var))), naive_se = unname(sqrt(diag(fit$naive.var))),
  n_rows = nrow(split), max_w = max(split$w), n_switched = sum(sw_before), n_events = sum(d$ev),
  unweighted_coef = unname(coef(unw)), unweighted_se = unname(sqrt(diag(unw$var))),
  unstabilized_coef = unname(coef(fit_u)), unstabilized_se = unname(sqrt(diag(fit_u$var))),
  unstabilized_max_w = max(split$w_u)
), out)

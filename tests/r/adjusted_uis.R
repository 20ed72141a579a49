# Golden values for iop_research.designs.adjusted: adjusted survival curves written out in R.
# g-computation: coxph outcome model, survfit(fit, newdata = cohort with TREAT set to a), rowMeans;
# IPTW: glm propensity, stabilised ATE weights, survfit(Surv ~ TREAT, weights = w).
# Data: UIS (shared datasets). Usage (repository root):
#   Rscript --vanilla tests/r/adjusted_uis.R <datasets_dir> <out_json>
suppressPackageStartupMessages(library(survival))
args <- commandArgs(trailingOnly = TRUE)
ddir <- args[1]; out <- args[2]
source("tests/r/json_arrays.R")

uis <- read.csv(file.path(ddir, "uis.csv"))
times <- c(30, 90, 180, 365, 600)
tau <- 600
step_at <- function(t, s, at) { i <- findInterval(at, t); ifelse(i == 0, 1, s[pmax(i, 1)]) }
rmst <- function(t, s, tau) { keep <- t < tau; tt <- c(0, t[keep], tau); ss <- c(1, s[keep]); sum(diff(tt) * ss) }

fit <- coxph(Surv(TIME, CENSOR) ~ TREAT + AGE + BECK + NDT + IV + RACE + SITE, data = uis)
g <- list()
for (a in c(0, 1)) {
  nd <- uis; nd$TREAT <- a
  sf <- survfit(fit, newdata = nd)
  s_avg <- rowMeans(sf$surv)
  g[[paste0("a", a)]] <- list(surv = step_at(sf$time, s_avg, times), rmst = rmst(sf$time, s_avg, tau))
}
# stratified outcome model
fits <- coxph(Surv(TIME, CENSOR) ~ TREAT + AGE + BECK + NDT + IV + RACE + strata(SITE), data = uis)
gs <- list()
for (a in c(0, 1)) {
  nd <- uis; nd$TREAT <- a
  # rows of one stratum: survfit without the strata column gives every stratum's curves; keep theirs
  tot <- 0
  for (st in sort(unique(nd$SITE))) {
    sub <- nd[nd$SITE == st, ]
    sub$SITE <- NULL
    sf <- survfit(fits, newdata = sub)
    s <- sf[which(names(sf$strata) == paste0("SITE=", st)), ]
    tot <- tot + rowSums(apply(s$surv, 2, function(v) step_at(s$time, v, times)))
  }
  gs[[paste0("a", a)]] <- list(surv = tot / nrow(nd))
}

ps <- fitted(glm(TREAT ~ AGE + BECK + NDT + IV + RACE + SITE, family = binomial, data = uis))
p1 <- mean(uis$TREAT)
uis$w <- ifelse(uis$TREAT == 1, p1 / ps, (1 - p1) / (1 - ps))
sfw <- survfit(Surv(TIME, CENSOR) ~ TREAT, data = uis, weights = w)
iw <- list()
for (a in c(0, 1)) {
  s <- sfw[a + 1]
  iw[[paste0("a", a)]] <- list(surv = step_at(s$time, s$surv, times), rmst = rmst(s$time, s$surv, tau))
}
res <- list(R_version = R.version.string, survival = as.character(packageVersion("survival")),
            times = times, tau = tau, gcomp = g, gcomp_strata = gs, iptw = iw)
writeLines(to_json(res), out)

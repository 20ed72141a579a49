# Golden values for iop_research.survival.predict (survival 3.5, cmprsk): survfit.coxph with
# newdata (curves, standard errors, log CI), basehaz, predict.coxph (lp/risk/expected, se.fit),
# predict.crr. Data: UIS and HELP (shared datasets), tests/golden/data/cox_recurrent.csv and
# cr_sim.csv (simulated, committed).
# Usage (repository root): Rscript --vanilla tests/r/predict_cox.R <datasets_dir> <out_json>
suppressPackageStartupMessages({library(survival); library(cmprsk)})
args <- commandArgs(trailingOnly = TRUE)
ddir <- args[1]; out <- args[2]
source("tests/r/json_arrays.R")

uis <- read.csv(file.path(ddir, "uis.csv"))
uis$IVf <- factor(uis$IV)
uis$w_frac <- 0.5 + (uis$ID %% 4) / 4
uis$cl <- uis$ID %% 40
times <- c(0.5, 30, 90, 180, 365, 500, 2000)

curves <- function(fit, nd) {
  # one survfit per newdata row (so that strata in newdata select the row's stratum)
  res <- list()
  for (i in seq_len(nrow(nd))) {
    sf <- survfit(fit, newdata = nd[i, , drop = FALSE])
    s <- summary(sf, times = times, extend = TRUE)
    res[[i]] <- list(time = s$time, surv = s$surv, se = s$std.err, lower = s$lower, upper = s$upper)
    if (i == 1) res[[i]] <- c(res[[i]], list(full_time = sf$time, full_surv = as.vector(sf$surv),
                                             full_se_h = as.vector(sf$std.err)))
  }
  res
}
preds <- function(fit, nd, expected = TRUE) {
  r <- list()
  for (ty in c("lp", "risk")) {
    p <- predict(fit, newdata = nd, type = ty, se.fit = TRUE)
    r[[ty]] <- list(fit = unname(p$fit), se = unname(p$se.fit))
    p0 <- predict(fit, type = ty, se.fit = TRUE)
    r[[paste0(ty, "_train")]] <- list(fit = unname(p0$fit), se = unname(p0$se.fit))
  }
  r$lp_zero <- unname(predict(fit, newdata = nd, type = "lp", reference = "zero"))
  r$lp_sample <- unname(predict(fit, newdata = nd, type = "lp", reference = "sample"))
  if (expected) {
    p <- predict(fit, newdata = nd, type = "expected", se.fit = TRUE)
    r$expected <- list(fit = unname(p$fit), se = unname(p$se.fit))
  }
  r$expected_train <- unname(predict(fit, type = "expected"))
  r
}
bh <- function(fit) {
  b <- basehaz(fit, centered = TRUE)
  b0 <- basehaz(fit, centered = FALSE)
  list(time = b$time, hazard = b$hazard, hazard0 = b0$hazard,
       strata = if (is.null(b$strata)) NULL else as.character(b$strata))
}

res <- list(R_version = R.version.string, survival = as.character(packageVersion("survival")),
            cmprsk = as.character(packageVersion("cmprsk")), times = times)
nd <- uis[c(1, 2, 5, 100, 300), ]
f_uis <- Surv(TIME, CENSOR) ~ TREAT + SITE + AGE + NDT + IVf + RACE + BECK
fit <- coxph(f_uis, data = uis)
res$uis_efron <- list(means = unname(fit$means), curves = curves(fit, nd), pred = preds(fit, nd), bh = bh(fit))
fitb <- coxph(f_uis, data = uis, ties = "breslow")
res$uis_breslow <- list(curves = curves(fitb, nd), pred = preds(fitb, nd), bh = bh(fitb))
fits <- coxph(Surv(TIME, CENSOR) ~ TREAT + AGE + NDT + IVf + RACE + BECK + strata(SITE), data = uis)
res$uis_strata <- list(curves = curves(fits, nd), pred = preds(fits, nd), bh = bh(fits))
fitc <- coxph(f_uis, data = uis, cluster = cl)
res$uis_cluster <- list(curves = curves(fitc, nd), pred = preds(fitc, nd))
fitw <- coxph(f_uis, data = uis, weights = w_frac, robust = FALSE)
res$uis_weights <- list(means = unname(fitw$means), curves = curves(fitw, nd), pred = preds(fitw, nd), bh = bh(fitw))

# counting process: in-treatment indicator split at LEN.T
a <- uis[uis$LEN.T < uis$TIME, ]
b <- uis[uis$LEN.T >= uis$TIME, ]
tv <- rbind(transform(a, start = 0, stop = LEN.T, event = 0, intreat = 1),
            transform(a, start = LEN.T, stop = TIME, event = CENSOR, intreat = 0),
            transform(b, start = 0, stop = TIME, event = CENSOR, intreat = 1))
fit_tv <- coxph(Surv(start, stop, event) ~ TREAT + intreat + SITE + AGE + NDT + IVf + RACE + BECK, data = tv)
ndtv <- transform(nd, start = 10, stop = 100, event = 1, intreat = c(1, 0, 1, 0, 1))
res$uis_tv <- list(curves = curves(fit_tv, ndtv), pred = preds(fit_tv, ndtv, expected = FALSE), bh = bh(fit_tv),
                   expected = unname(predict(fit_tv, newdata = ndtv, type = "expected")))

help <- read.csv(file.path(ddir, "helprct.csv"))
help <- help[!is.na(help$anysubstatus) & !is.na(help$daysanysub) & help$daysanysub > 0, ]
fith <- coxph(Surv(daysanysub, anysubstatus) ~ treat + substance + age + female, data = help)
ndh <- data.frame(treat = c("yes", "no", "no"), substance = c("heroin", "alcohol", "cocaine"),
                  age = c(30, 45, 38), female = c(1, 0, 0), daysanysub = c(60, 120, 200), anysubstatus = 1)
res$help <- list(curves = curves(fith, ndh), pred = preds(fith, ndh), bh = bh(fith))

# simulated recurrent events (counting process, categorical grp, heavy ties), Breslow and Efron
rec <- read.csv("tests/golden/data/cox_recurrent.csv")
fitr <- coxph(Surv(start, stop, event) ~ x1 + x2 + grp + mat, data = rec, cluster = id)
ndr <- data.frame(x1 = c(0, 1), x2 = c(0.2, -1), grp = c("a", "c"), mat = c(1, 0), start = c(0, 30), stop = c(60, 200),
                  event = 1)
res$recurrent <- list(curves = curves(fitr, ndr), pred = preds(fitr, ndr, expected = FALSE), bh = bh(fitr),
                      expected = unname(predict(fitr, newdata = ndr, type = "expected")))

# Fine-Gray: predict.crr
d <- read.csv("tests/golden/data/cr_sim.csv")
X <- cbind(age_c = d$age_c, female = d$female, mat = d$mat)
crr1 <- crr(d$days, d$status, X, failcode = 1, gtol = 1e-10, maxiter = 50)
cov1 <- rbind(c(0, 0, 0), c(5, 1, 1), c(-3, 0, 1))
pc <- predict(crr1, cov1)
res$crr <- list(coef = unname(crr1$coef), time = pc[, 1], cif = lapply(2:ncol(pc), function(j) pc[, j]),
                cov1 = cov1)

writeLines(to_json(res), out)

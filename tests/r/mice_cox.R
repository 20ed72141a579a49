# Golden values for iop_research.derive.impute (mice 3.15, survival 3.5): multiple imputation of
# missing covariates of a Cox model and Rubin's rules, on tests/golden/data/mice_cox.csv
# (written by tests/r/mice_make_data.py).
# Usage (repository root): Rscript --vanilla tests/r/mice_cox.R <datasets_dir> <out_json>
#
# What the test compares:
# - nelsonaalen(): deterministic, 1e-10;
# - pool() of R's own 50 fits (per-imputation estimates and SEs below): deterministic, 1e-6;
# - the complete-case fit: deterministic, 1e-6 / 1e-4;
# - the pooled estimates of R's imputations against the Python imputations: Monte-Carlo
#   tolerance (both m = 50; see tests/test_impute.py).
suppressPackageStartupMessages({library(survival); library(mice)})
args <- commandArgs(trailingOnly = TRUE)
out <- args[2]
source("tests/r/json.R")

dat <- read.csv("tests/golden/data/mice_cox.csv", stringsAsFactors = FALSE)
# reference levels as the Python design: first sorted level
dat$housing <- factor(dat$housing, levels = c("homeless", "stable", "unstable"))
dat$employed <- factor(dat$employed, levels = c("no", "yes"))
dat$cumhaz <- nelsonaalen(dat, time, event)

imp_data <- dat[, c("age", "mat", "severity", "housing", "employed", "event", "cumhaz")]
meth <- make.method(imp_data)   # pmm for severity, polyreg for housing, logreg for employed
pred <- make.predictorMatrix(imp_data)
M <- 50
imp <- mice(imp_data, m = M, maxit = 10, method = meth, predictorMatrix = pred, seed = 20261207,
            printFlag = FALSE)
# analysis data: the imputed covariates with the original follow-up time
fits <- lapply(seq_len(M), function(i) {
  d <- complete(imp, i)
  d$time <- dat$time
  coxph(Surv(time, event) ~ age + severity + housing + employed + mat, data = d)
})
pooled <- pool(as.mira(fits))
s <- summary(pooled, conf.int = TRUE)
p <- pooled$pooled

cc <- coxph(Surv(time, event) ~ age + severity + housing + employed + mat, data = dat)

res <- list(
  R_version = sc(R.version.string), survival = sc(as.character(packageVersion("survival"))),
  mice = sc(as.character(packageVersion("mice"))),
  call = sc(paste("mice(m = 50, maxit = 10, seed = 20261207, method = make.method, predictors: age, mat,",
                  "severity, housing, employed, event, nelsonaalen); pool(with(imp, coxph(Surv(time, event) ~",
                  "age + severity + housing + employed + mat)))")),
  methods = as.list(meth),
  m = sc(M),
  cumhaz = dat$cumhaz,
  terms = names(coef(fits[[1]])),
  per_imputation_estimate = t(sapply(fits, coef)),
  per_imputation_se = t(sapply(fits, function(f) sqrt(diag(vcov(f))))),
  dfcom = sc(p$dfcom[1]),
  pooled = list(estimate = p$estimate, ubar = p$ubar, b = p$b, t = p$t, df = p$df, riv = p$riv,
                lambda = p$lambda, fmi = p$fmi, std_error = s$std.error, statistic = s$statistic,
                p_value = s$p.value, conf_low = s[["2.5 %"]], conf_high = s[["97.5 %"]]),
  complete_case = list(n = sc(cc$n), nevent = sc(cc$nevent), coef = unname(coef(cc)),
                       se = unname(sqrt(diag(vcov(cc)))))
)
writeLines(to_json(res), out)

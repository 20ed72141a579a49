# Golden values for the estimator defects of issue 11, point 8 (a holdout comparison with R),
# on tests/golden/data/defects_*.csv (written by tests/r/make_defects_data.py) (survival 3.5, cmprsk).
# Usage (repository root): Rscript --vanilla tests/r/defects.R <datasets_dir> <out_json>
suppressPackageStartupMessages({library(survival); library(cmprsk)})
args <- commandArgs(trailingOnly = TRUE)
out <- args[2]

source("tests/r/json_arrays.R")
source("tests/r/cox_dump.R")

err_msg <- function(expr) tryCatch({ force(expr); NA_character_ }, error = function(e) conditionMessage(e))
res <- list(R_version = R.version.string, survival = as.character(packageVersion("survival")),
            cmprsk = as.character(packageVersion("cmprsk")))
rt <- read.csv("tests/golden/data/defects_right.csv")
cp <- read.csv("tests/golden/data/defects_counting.csv")
ce <- read.csv("tests/golden/data/defects_censored.csv")

# 1. clusters <= coefficients: singular robust variance; R's Wald and robust score tests use a
#    generalised inverse (coxph.wtest / cholesky2) and are finite; print() uses df = number of coefficients
f2 <- coxph(Surv(time, event) ~ x1 + x2 + x3, data = rt, cluster = cl2)
res$few_clusters_2 <- dump_fit(f2)
res$few_clusters_2$wald_p <- summary(f2)$waldtest[["pvalue"]]
res$few_clusters_2$wald_df <- summary(f2)$waldtest[["df"]]
res$few_clusters_3 <- dump_fit(coxph(Surv(time, event) ~ x1 + x2 + x3, data = rt, cluster = cl3))
res$few_clusters_counting <- dump_fit(coxph(Surv(start, stop, event) ~ treat + x, data = cp, cluster = cl2))

# 2. non-integer case weights: robust variance by default (robust missing)
res$frac_weights_default <- dump_fit(coxph(Surv(time, event) ~ x1 + x2 + x3, data = rt, weights = wf))
res$frac_weights_model <- dump_fit(coxph(Surv(time, event) ~ x1 + x2 + x3, data = rt, weights = wf,
                                         robust = FALSE))
res$frac_weights_counting <- dump_fit(coxph(Surv(start, stop, event) ~ treat + x + strata(s), data = cp,
                                            weights = wf))

# 3. robust = TRUE on (start, stop] rows without cluster or id: R stops
res$robust_counting_no_cluster <- list(
  error = err_msg(coxph(Surv(start, stop, event) ~ treat + x, data = cp, robust = TRUE)))
res$robust_counting_id <- dump_fit(coxph(Surv(start, stop, event) ~ treat + x, data = cp, cluster = id))

# 4. log-rank with every row censored: R's survdiff returns chisq = 0 and p = NaN silently
sd0 <- survdiff(Surv(t, e) ~ g, data = ce)
res$logrank_all_censored <- list(chisq = sd0$chisq, p = sd0$pvalue, obs = as.vector(sd0$obs),
                                 exp = as.vector(sd0$exp))

# 5. cox.zph residual rows (zph$y) in R's order, ties within event times, strata, counting process
fz <- coxph(Surv(start, stop, event) ~ treat + x + strata(s), data = cp)
res$zph_counting_strata <- dump_zph(fz, "km")
res$zph_right_ties <- dump_zph(coxph(Surv(time, event) ~ x1 + x2 + grp, data = rt), "identity")

# 6. Fine-Gray with a categorical covariate: crr on the treatment-coded model matrix
mm <- model.matrix(~ x2 + grp, data = rt)[, -1]
fg <- crr(rt$time, rt$cr, mm, failcode = 1, cencode = 0, gtol = 1e-10, maxiter = 50)
res$fine_gray_categorical <- list(names = colnames(mm), coef = unname(fg$coef), se = unname(sqrt(diag(fg$var))))

# 7. concordance of a counting-process fit with a continuous covariate (many distinct linear
#    predictors) and a cluster: compared with the blocked dominance-sum path
res$concordance_counting <- dump_fit(coxph(Surv(start, stop, event) ~ treat + x, data = cp, cluster = id,
                                           weights = wf))

writeLines(to_json(res), out)

# Golden values for fit_glmm(random_slope=...) (lme4::glmer / lmer, correlated random intercept and slope).
# Data: tests/golden/data/glmm_slopes.csv (tests/r/make_glmm_slopes_data.py: 240 simulated patients, weeks 0..7,
# a correlated random intercept and week slope per patient), and a singular fit on tests/golden/data/gee_uds.csv.
# Usage (repository root): Rscript --vanilla tests/r/glmm_slopes.R <datasets_dir> <out_json>
# The optimisers run to tight tolerances (bobyqa rhoend 1e-12) so R's estimates are converged well below the
# 1e-4 the test asks; standard errors are lme4's default vcov() (glmer: inverse of its finite-difference Hessian
# of the deviance in (theta, beta), use.hessian = TRUE; lmer: sigma^2 (X' V^-1 X)^-1).
suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
out <- args[2]
source("tests/r/json.R")

d <- read.csv("tests/golden/data/glmm_slopes.csv")
gctl <- glmerControl(optimizer = c("bobyqa", "bobyqa"),
                     optCtrl = list(rhobeg = 0.2, rhoend = 1e-12, maxfun = 1e6),
                     tolPwrss = 1e-12, check.conv.grad = "ignore")
lctl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e6),
                    check.conv.grad = "ignore")

dump_slopes <- function(f) {
  cf <- summary(f)$coefficients
  vc <- VarCorr(f)[[1]]
  re <- ranef(f, condVar = TRUE)[[1]]
  pv <- attr(re, "postVar")
  res <- list(term = rownames(cf), estimate = unname(cf[, 1]), std_error = unname(cf[, 2]),
              re_sd = sc(attr(vc, "stddev")[1]), re_slope_sd = sc(attr(vc, "stddev")[2]),
              re_corr = sc(attr(vc, "correlation")[1, 2]),
              residual_variance = sc(if (isGLMM(f)) NA else sigma(f)^2),
              theta = unname(getME(f, "theta")),
              loglik = sc(as.numeric(logLik(f))), aic = sc(AIC(f)), bic = sc(BIC(f)),
              n_obs = sc(nobs(f)), n_groups = sc(nrow(re)),
              ranef_group = rownames(re), ranef = re[, 1], ranef_slope = re[, 2],
              cond_sd = sqrt(pv[1, 1, ]), slope_cond_sd = sqrt(pv[2, 2, ]))
  if (ncol(cf) >= 4) res$p_value <- unname(cf[, 4])
  res
}

res <- list(R_version = R.version.string, lme4 = as.character(packageVersion("lme4")))
res$binomial_laplace <- dump_slopes(glmer(positive ~ mat + female + age + week + (1 + week | id), data = d,
                                          family = binomial, control = gctl))
res$poisson_laplace <- dump_slopes(glmer(drinks ~ mat + age + week + (1 + week | id), data = d,
                                         family = poisson, control = gctl))
res$gaussian_reml <- dump_slopes(lmer(craving ~ mat + age + week + (1 + week | id), data = d, REML = TRUE,
                                      control = lctl))
res$gaussian_ml <- dump_slopes(lmer(craving ~ mat + age + week + (1 + week | id), data = d, REML = FALSE,
                                    control = lctl))
# a singular fit (the week slopes of tests/golden/data/gee_uds.csv are perfectly correlated with the intercepts:
# correlation -1, lme4's boundary theta[3] = 0)
uds <- read.csv("tests/golden/data/gee_uds.csv")
res$uds_binomial_singular <- dump_slopes(glmer(positive ~ mat + week + (1 + week | id), data = uds,
                                               family = binomial, control = gctl))
writeLines(to_json(res), out)

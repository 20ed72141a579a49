# Golden values for iop_research.longitudinal.glmm.fit_glmm (lme4::glmer / lmer, random intercept).
# Data: simulated patient-week screens tests/golden/data/gee_uds.csv (tests/r/make_gee_data.py; a patient
# random intercept of sd 1 on the log odds), the demo cohort's weekly screens
# (tests/golden/data/glmm_demo_weeks.csv, tests/r/make_glmm_demo_data.py) and the HELP trial (../shared/datasets/helprct.csv, random
# intercept per race group).
# Usage (repository root): Rscript --vanilla tests/r/glmm.R <datasets_dir> <out_json>
# The optimiser is run to tight tolerances (bobyqa rhoend 1e-12 after lme4's default Nelder-Mead stage) so
# that R's estimates are converged to well below the 1e-4 the test asks; the standard errors are lme4's
# default vcov(): for glmer the inverse of its finite-difference Hessian of the deviance in (theta, beta)
# (use.hessian = TRUE), for lmer sigma^2 (X' V^-1 X)^-1 at the estimates.
suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
ddir <- args[1]
out <- args[2]
source("tests/r/json.R")

uds <- read.csv("tests/golden/data/gee_uds.csv")
uds$site <- factor(uds$site)
help <- read.csv(file.path(ddir, "helprct.csv"))
help$homeless01 <- as.integer(help$homeless == "homeless")
help$treat <- factor(help$treat)
help$substance <- factor(help$substance)

gctl <- glmerControl(optimizer = c("bobyqa", "bobyqa"),
                     optCtrl = list(rhobeg = 0.2, rhoend = 1e-12, maxfun = 1e6),
                     tolPwrss = 1e-12, check.conv.grad = "ignore")
lctl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e6))

dump_mm <- function(f) {
  cf <- summary(f)$coefficients
  vc <- as.data.frame(VarCorr(f))
  re <- ranef(f)[[1]]
  res <- list(term = rownames(cf), estimate = unname(cf[, 1]), std_error = unname(cf[, 2]),
              re_variance = sc(vc$vcov[1]),
              residual_variance = sc(if (nrow(vc) > 1) vc$vcov[2] else NA),
              loglik = sc(as.numeric(logLik(f))), aic = sc(AIC(f)), bic = sc(BIC(f)),
              n_obs = sc(nobs(f)), n_groups = sc(nrow(re)),
              ranef_group = rownames(re), ranef = re[, 1])
  if (ncol(cf) >= 4) res$p_value <- unname(cf[, 4])
  res
}

res <- list(R_version = R.version.string, lme4 = as.character(packageVersion("lme4")))
fb <- positive ~ mat + week + female + age + site + (1 | id)
res$uds_binomial_laplace <- dump_mm(glmer(fb, data = uds, family = binomial, nAGQ = 1, control = gctl))
res$uds_binomial_agq7 <- dump_mm(glmer(fb, data = uds, family = binomial, nAGQ = 7, control = gctl))
res$uds_binomial_agq15 <- dump_mm(glmer(fb, data = uds, family = binomial, nAGQ = 15, control = gctl))
res$uds_gaussian_reml <- dump_mm(lmer(craving ~ mat + week + age + (1 | id), data = uds, REML = TRUE,
                                      control = lctl))
res$uds_gaussian_ml <- dump_mm(lmer(craving ~ mat + week + age + (1 | id), data = uds, REML = FALSE,
                                    control = lctl))
# rows dealt to 30 groups regardless of patient: no between-group variance, lme4 reports a singular fit (theta = 0)
uds$rg <- (seq_len(nrow(uds)) - 1) %% 30
res$uds_binomial_singular <- dump_mm(glmer(positive ~ mat + week + age + (1 | rg), data = uds, family = binomial,
                                           nAGQ = 1, control = gctl))
# the demo cohort's weekly screens (tests/r/make_glmm_demo_data.py): per episode, and per programme
demo <- read.csv("tests/golden/data/glmm_demo_weeks.csv")
fd <- positive ~ week + has_mat + age + sex + substance
res$demo_episode_laplace <- dump_mm(glmer(update(fd, . ~ . + (1 | episode_id)), data = demo, family = binomial,
                                          nAGQ = 1, control = gctl))
res$demo_episode_agq9 <- dump_mm(glmer(update(fd, . ~ . + (1 | episode_id)), data = demo, family = binomial,
                                       nAGQ = 9, control = gctl))
res$demo_program_laplace <- dump_mm(glmer(update(fd, . ~ . + (1 | program)), data = demo, family = binomial,
                                          nAGQ = 1, control = gctl))
hb <- homeless01 ~ age + female + treat + cesd + (1 | substance)
res$help_binomial_laplace <- dump_mm(glmer(hb, data = help, family = binomial, nAGQ = 1, control = gctl))
res$help_binomial_agq9 <- dump_mm(glmer(hb, data = help, family = binomial, nAGQ = 9, control = gctl))
hp <- d1 ~ age + female + treat + cesd + (1 | racegrp)
res$help_poisson_laplace <- dump_mm(glmer(hp, data = help, family = poisson, nAGQ = 1, control = gctl))
res$help_poisson_agq5 <- dump_mm(glmer(hp, data = help, family = poisson, nAGQ = 5, control = gctl))
hg <- cesd ~ age + female + treat + substance + (1 | racegrp)
res$help_gaussian_reml <- dump_mm(lmer(hg, data = help, REML = TRUE, control = lctl))
res$help_gaussian_ml <- dump_mm(lmer(hg, data = help, REML = FALSE, control = lctl))
writeLines(to_json(res), out)

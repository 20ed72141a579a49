# Golden values for fit_glmm(profile=True): lme4's profile-likelihood interval of the random-intercept SD
# (confint(method = "profile"), .sig01) on tests/golden/data/gee_uds.csv, Laplace and nAGQ = 7.
# lme4 interpolates its profile with a spline; the package finds the roots directly, so they agree to
# about 1e-5 relative, not to machine precision.
# Call (repo root): Rscript --vanilla tests/r/glmm_profile.R <datasets_dir> <out_json>
suppressPackageStartupMessages(library(lme4))
source("tests/r/cr_json.R")
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv("tests/golden/data/gee_uds.csv")
out <- list()
for (q in c(1, 7)) {
  f <- glmer(positive ~ mat + week + female + age + site + (1 | id), data = d, family = binomial, nAGQ = q)
  ci <- suppressMessages(confint(f, parm = "theta_", method = "profile"))
  out[[paste0("nagq", q)]] <- list(sd = unname(sqrt(as.data.frame(VarCorr(f))$vcov[1])),
                                   low = unname(ci[1, 1]), high = unname(ci[1, 2]))
}
write_json(out, args[2])

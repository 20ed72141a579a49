# Golden values for iop_research.longitudinal.gee.fit_gee on simulated patient-week screens
# (tests/golden/data/gee_uds.csv, written by tests/r/make_gee_data.py) (geepack).
# Usage (repository root): Rscript --vanilla tests/r/gee.R <datasets_dir (unused)> <out_json>
# geese.control(epsilon = 1e-12): geepack's default stopping rule (1e-4) leaves the estimates
# ~1e-5 from the solution; both sides are converged fully so that they can be compared at 1e-6.
suppressPackageStartupMessages(library(geepack))
args <- commandArgs(trailingOnly = TRUE)
out <- args[2]
source("tests/r/json.R")

d <- read.csv("tests/golden/data/gee_uds.csv")
d$site <- factor(d$site)
d$w <- 1 + (d$id %% 3)  # case weights 1, 2, 3 for the weighted fit
ctl <- geese.control(epsilon = 1e-12, maxit = 200)

dump_gee <- function(f) {
  s <- summary(f)
  cf <- s$coefficients
  list(term = rownames(cf), estimate = cf[, "Estimate"], std_error = cf[, "Std.err"],
       p_value = cf[, "Pr(>|W|)"],
       alpha = sc(if (nrow(s$corr) > 0) s$corr[1, "Estimate"] else NA),
       scale = sc(s$dispersion[1, "Estimate"]),
       n_clusters = sc(length(unique(f$id))), max_cluster_size = sc(max(table(f$id))))
}

res <- list(R_version = R.version.string, geepack = as.character(packageVersion("geepack")))
for (cs in c("exchangeable", "ar1", "independence")) {
  res[[paste0("binomial_", cs)]] <- dump_gee(geeglm(positive ~ mat + week + female + age + site, id = id,
                                                    waves = week, data = d, family = binomial, corstr = cs,
                                                    control = ctl))
  res[[paste0("gaussian_", cs)]] <- dump_gee(geeglm(craving ~ mat + week + age, id = id, waves = week,
                                                    data = d, family = gaussian, corstr = cs, control = ctl))
}
# AR(1) without waves: distances are positions within the cluster
res$binomial_ar1_nowaves <- dump_gee(geeglm(positive ~ mat + week + female + age + site, id = id, data = d,
                                            family = binomial, corstr = "ar1", control = ctl))
# prior weights
res$gaussian_exchangeable_weighted <- dump_gee(geeglm(craving ~ mat + week + age, id = id, waves = week,
                                                      data = d, family = gaussian, corstr = "exchangeable",
                                                      weights = w, control = ctl))
res$binomial_exchangeable_weighted <- dump_gee(geeglm(positive ~ mat + week + female + age + site, id = id,
                                                      waves = week, data = d, family = binomial,
                                                      corstr = "exchangeable", weights = w, control = ctl))
writeLines(to_json(res), out)

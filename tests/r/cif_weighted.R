# Golden values for iop_research.survival.cumulative_incidence(weights_col=...): weighted Aalen-Johansen CIFs
# with R survfit's infinitesimal-jackknife standard errors (multi-state survfit with weights and id).
# Reads tests/golden/data/cif_weighted.csv (200 rows, causes 1 and 2, weights Uniform(0.3, 3)).
# Call (repo root): Rscript --vanilla tests/r/cif_weighted.R <datasets_dir> <out_json>
suppressPackageStartupMessages(library(survival))
source("tests/r/cr_json.R")
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv("tests/golden/data/cif_weighted.csv")
times <- c(10, 30, 60, 100)
f <- survfit(Surv(t, factor(s)) ~ 1, data = d, weights = w, id = id)
s <- summary(f, times = times)
write_json(list(times = as_array(times),
                cif1 = as_array(s$pstate[, 2]), cif2 = as_array(s$pstate[, 3]),
                se1 = as_array(s$std.err[, 2]), se2 = as_array(s$std.err[, 3])), args[2])

# Golden values for iop_research.survival.cox on simulated data (tests/golden/data/cox_*.csv, written by make_cox_data.py) (survival 3.5).
# Usage (repository root): Rscript --vanilla tests/r/cox_sim.R <datasets_dir> <out_json>
suppressPackageStartupMessages(library(survival))
args <- commandArgs(trailingOnly = TRUE)
ddir <- args[1]; out <- args[2]

source("tests/r/json_arrays.R")
source("tests/r/cox_dump.R")

res <- list(R_version = R.version.string, survival = as.character(packageVersion("survival")))
rec <- read.csv("tests/golden/data/cox_recurrent.csv")
# Andersen-Gill: counting-process rows, cluster-robust variance by patient
res$ag_efron <- dump_fit(coxph(Surv(start, stop, event) ~ x1 + x2 + grp + mat, data = rec, cluster = id))
res$ag_breslow <- dump_fit(coxph(Surv(start, stop, event) ~ x1 + x2 + grp + mat, data = rec, cluster = id,
                                 ties = "breslow"))
res$ag_strata <- dump_fit(coxph(Surv(start, stop, event) ~ x1 + x2 + mat + strata(grp), data = rec,
                                cluster = id))
fit_naive <- coxph(Surv(start, stop, event) ~ x1 + x2 + grp + mat, data = rec)
res$ag_naive <- dump_fit(fit_naive)
res$ag_zph_km <- dump_zph(fit_naive, "km")
res$ag_zph_identity <- dump_zph(fit_naive, "identity")

edge <- read.csv("tests/golden/data/cox_edge.csv")
pos <- edge[edge$w > 0, ]  # R rejects zero weights; fit_cox ignores those rows
res$edge_weights <- dump_fit(coxph(Surv(time, event) ~ x + z + strata(stratum), data = pos, weights = w))
res$edge_weights_breslow <- dump_fit(coxph(Surv(time, event) ~ x + z + strata(stratum), data = pos,
                                           weights = w, ties = "breslow"))
res$edge_unweighted <- dump_fit(coxph(Surv(time, event) ~ x + z + strata(stratum), data = edge))
res$edge_zph_km <- dump_zph(coxph(Surv(time, event) ~ x + z + strata(stratum), data = edge), "km")

writeLines(to_json(res), out)

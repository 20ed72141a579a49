# Golden values for iop_research.survival.metrics.concordance_index: survival::concordance
# (survival 3.5) with reverse = TRUE, timewt = "n" (Harrell) and "n/G2" (Uno), weights, strata,
# cluster and ymax. Data: UIS and HELP (shared datasets), tests/golden/data/concordance_sim.csv
# (tests/r/make_concordance_data.py).
# Usage (repository root): Rscript --vanilla tests/r/concordance_metrics.R <datasets_dir> <out_json>
suppressPackageStartupMessages(library(survival))
args <- commandArgs(trailingOnly = TRUE)
ddir <- args[1]; out <- args[2]
source("tests/r/json_arrays.R")

dump <- function(cf) list(c = unname(cf$concordance), se = unname(sqrt(cf$var)), count = unname(cf$count))
uis <- read.csv(file.path(ddir, "uis.csv"))
uis$r_int <- uis$NDT + 2 * uis$IV
uis$r_cont <- uis$AGE + uis$BECK / 100
uis$w_frac <- 0.5 + (uis$ID %% 4) / 4
uis$cl <- uis$ID %% 40
res <- list(R_version = R.version.string, survival = as.character(packageVersion("survival")))
for (tw in c("n", "n/G2")) {
  key <- if (tw == "n") "harrell" else "uno"
  r <- list()
  r$uis_int <- dump(concordance(Surv(TIME, CENSOR) ~ r_int, data = uis, reverse = TRUE, timewt = tw))
  r$uis_cont <- dump(concordance(Surv(TIME, CENSOR) ~ r_cont, data = uis, reverse = TRUE, timewt = tw))
  r$uis_weights <- dump(concordance(Surv(TIME, CENSOR) ~ r_cont, data = uis, weights = w_frac, reverse = TRUE,
                                    timewt = tw))
  r$uis_strata <- dump(concordance(Surv(TIME, CENSOR) ~ r_int + strata(SITE), data = uis, reverse = TRUE,
                                   timewt = tw))
  r$uis_cluster <- dump(concordance(Surv(TIME, CENSOR) ~ r_cont, data = uis, cluster = cl, reverse = TRUE,
                                    timewt = tw))
  r$uis_ymax <- dump(concordance(Surv(TIME, CENSOR) ~ r_cont, data = uis, ymax = 365, reverse = TRUE, timewt = tw))
  help <- read.csv(file.path(ddir, "helprct.csv"))
  help <- help[!is.na(help$anysubstatus) & !is.na(help$daysanysub), ]
  r$help <- dump(concordance(Surv(daysanysub, anysubstatus) ~ cesd, data = help, reverse = TRUE, timewt = tw))
  sim <- read.csv("tests/golden/data/concordance_sim.csv")
  r$sim <- dump(concordance(Surv(days, event) ~ risk, data = sim, reverse = TRUE, timewt = tw))
  r$sim_all <- dump(concordance(Surv(days, event) ~ risk + strata(site), data = sim, weights = w, cluster = patient,
                                ymax = 300, reverse = TRUE, timewt = tw))
  res[[key]] <- r
}
writeLines(to_json(res), out)

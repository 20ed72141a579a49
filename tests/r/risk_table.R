# Golden values for iop_research.privacy.suppress_risk_table: numbers at risk and
# cumulative events at chosen days, from R survival's summary.survfit(times=, extend=TRUE).
#
# Usage (from the repository root):
#   Rscript --vanilla tests/r/risk_table.R <datasets_dir> <out_json>
# Reads uis.csv from <datasets_dir>. Stores the full survfit table per stratum (time,
# n.risk, n.event, n.censor), which the test turns into a KM tidy table, and R's
# summary at the requested days. Writes JSON without jsonlite.
suppressPackageStartupMessages(library(survival))

args <- commandArgs(trailingOnly = TRUE)
uis <- read.csv(file.path(args[1], "uis.csv"))
out_json <- args[2]

times <- c(0, 30, 100, 180, 365, 500, 700, 1000, 1500)
fit <- survfit(Surv(TIME, CENSOR) ~ TREAT, data = uis)
s <- summary(fit, times = times, extend = TRUE)

num <- function(x) paste0("[", paste(format(x, digits = 15, scientific = FALSE, trim = TRUE), collapse = ", "), "]")
strata_of <- function(st) sub("TREAT=", "", as.character(st))

full_strata <- rep(names(fit$strata), fit$strata)
parts <- c()
for (g in names(fit$strata)) {
  i <- full_strata == g
  j <- as.character(s$strata) == g
  parts <- c(parts, sprintf(
    '"%s": {"time": %s, "n_risk": %s, "n_event": %s, "n_censor": %s, "at_times": {"time": %s, "n_risk": %s, "cum_n_event": %s, "cum_n_censor": %s}}',
    strata_of(g), num(fit$time[i]), num(fit$n.risk[i]), num(fit$n.event[i]), num(fit$n.censor[i]),
    num(s$time[j]), num(s$n.risk[j]), num(cumsum(s$n.event[j])), num(cumsum(s$n.censor[j]))))
}
json <- sprintf(
  '{"R_version": "%s", "survival_version": "%s", "r_call": "summary(survfit(Surv(TIME, CENSOR) ~ TREAT, data = uis), times = c(%s), extend = TRUE)", "strata": {%s}}',
  R.version.string, as.character(packageVersion("survival")), paste(times, collapse = ", "), paste(parts, collapse = ", "))
writeLines(json, out_json)

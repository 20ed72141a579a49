# Golden values for iop_research.present.publish.Publisher.km: a Kaplan-Meier curve re-estimated
# from cumulative event and censoring counts rounded as OpenSAFELY's kaplan-meier-function does
# (roundmid_any: up to a multiple of `to`, then minus floor(to / 2); 0 stays 0).
#
# Usage (from the repository root):
#   Rscript --vanilla tests/r/km_rounded.R <datasets_dir> <out_json>
# Reads uis.csv from <datasets_dir>. For each TREAT stratum of
# survfit(Surv(TIME, CENSOR) ~ TREAT, data = uis): rounded cumulative counts (to = 11), the number at
# risk as the rounded total (rounded events + rounded censorings at the last time) minus the rounded
# exits before each time, survival cumprod(1 - d / n), Greenwood standard error of log S and the
# "log" confidence interval (survfit's default conf.type), computed here by the formulas (not by
# survfit on expanded data, which is what the package does). Rows whose rounded counts do not change
# are dropped (no step is drawn there). Writes JSON without jsonlite.
suppressPackageStartupMessages(library(survival))

args <- commandArgs(trailingOnly = TRUE)
uis <- read.csv(file.path(args[1], "uis.csv"))
out_json <- args[2]
to <- 11
roundmid_any <- function(x, to = 1) ceiling(x / to) * to - (floor(to / 2) * (x != 0))

fit <- survfit(Surv(TIME, CENSOR) ~ TREAT, data = uis)
num <- function(x) paste0("[", paste(format(x, digits = 15, scientific = FALSE, trim = TRUE), collapse = ", "), "]")
z <- qnorm(0.975)
full_strata <- rep(names(fit$strata), fit$strata)
parts <- c()
for (g in names(fit$strata)) {
  i <- full_strata == g
  ce <- roundmid_any(cumsum(fit$n.event[i]), to)
  cc <- roundmid_any(cumsum(fit$n.censor[i]), to)
  d <- diff(c(0, ce))
  cz <- diff(c(0, cc))
  total <- ce[length(ce)] + cc[length(cc)]
  n <- total - c(0, head(ce + cc, -1))
  keep <- (d + cz) > 0
  tt <- fit$time[i][keep]; n <- n[keep]; d <- d[keep]
  surv <- cumprod(1 - d / n)
  se_log <- sqrt(cumsum(ifelse(n > d, d / (n * (n - d)), 0)))
  lower <- surv * exp(-z * se_log)
  upper <- pmin(surv * exp(z * se_log), 1)
  med <- tt[which(surv <= 0.5)[1]]
  parts <- c(parts, sprintf(
    '"%s": {"time": %s, "n_risk": %s, "n_event": %s, "surv": %s, "lower": %s, "upper": %s, "median": %s}',
    sub("TREAT=", "", g), num(tt), num(n), num(d), num(surv), num(lower), num(upper),
    ifelse(is.na(med), "null", format(med, digits = 15))))
}
json <- sprintf(
  '{"R_version": "%s", "survival_version": "%s", "r_call": "survfit(Surv(TIME, CENSOR) ~ TREAT, data = uis); counts rounded with roundmid_any(cumsum(n.event|n.censor), 11)", "strata": {%s}}',
  R.version.string, as.character(packageVersion("survival")), paste(parts, collapse = ", "))
writeLines(json, out_json)

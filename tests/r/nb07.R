# Golden values for the numbers notebook 07 (notebooks/07_published_trials.ipynb) shows that
# tests/golden/trials_uis_help.json does not already hold: numbers at risk at the risk-table
# days, log-rank p-values, the UIS treatment-length model with separate in-treatment /
# after-exit indicators, and the HELP Cox model's hazard-ratio limits.
#
# Usage (from the repository root):
#   Rscript --vanilla tests/r/nb07.R <datasets_dir> <out_json>
# Reads uis.csv and helprct.csv from <datasets_dir>; the same exclusions as trials_uis_help.R.
suppressPackageStartupMessages(library(survival))

args <- commandArgs(trailingOnly = TRUE)
ddir <- args[1]
out_json <- args[2]

# ---------------------------------------------------------------- JSON
source("tests/r/json.R")

uis <- read.csv(file.path(ddir, "uis.csv"))
uis <- uis[complete.cases(uis[, c("ID", "AGE", "BECK", "HC", "IV", "NDT", "RACE", "TREAT", "SITE",
                                  "LEN.T", "TIME", "CENSOR")]), ]
help_raw <- read.csv(file.path(ddir, "helprct.csv"))
help <- help_raw[!is.na(help_raw$anysubstatus) & !is.na(help_raw$daysanysub), ]

uis_days <- c(0, 180, 365, 545, 730)
help_days <- c(0, 60, 120, 180, 240)
risk_case <- function(d, call, days) {
  fit <- eval(parse(text = call))
  s <- summary(fit, times = days, extend = TRUE)
  list(r_call = sc(call), strata = sub(".*=", "", as.character(s$strata)), time = s$time,
       n_at_risk = s$n.risk, cum_events = unname(unlist(tapply(s$n.event, s$strata, cumsum))))
}
lr_case <- function(d, call) {
  fit <- eval(parse(text = call))
  df <- length(fit$n) - 1
  list(r_call = sc(call), chisq = sc(fit$chisq), df = sc(df), p_value = sc(pchisq(fit$chisq, df, lower.tail = FALSE)))
}
cox_case <- function(d, call) {
  fit <- eval(parse(text = call))
  ci <- summary(fit)$conf.int
  list(r_call = sc(call), terms = names(coef(fit)), estimate = unname(coef(fit)),
       std_error = unname(sqrt(diag(vcov(fit)))), hr_conf_low = unname(ci[, "lower .95"]),
       hr_conf_high = unname(ci[, "upper .95"]), p_value = unname(summary(fit)$coefficients[, "Pr(>|z|)"]),
       loglik = fit$loglik, n = sc(fit$n), nevent = sc(fit$nevent),
       concordance = sc(unname(fit$concordance["concordance"])))
}

# (0, LEN.T] in treatment, (LEN.T, TIME] after exit (survSplit at each person's LEN.T)
uis$id <- seq_len(nrow(uis))
tv <- tmerge(uis, uis, id = id, event = event(TIME, CENSOR))
tv <- tmerge(tv, uis, id = id, exited = tdc(LEN.T))
tv$in_treatment <- 1 - tv$exited
tv$long_in_treatment <- tv$TREAT * tv$in_treatment
tv$long_after_exit <- tv$TREAT * (1 - tv$in_treatment)

out <- list(
  R = sc(R.version.string), survival = sc(as.character(packageVersion("survival"))),
  uis_tv_rows = sc(nrow(tv)), uis_tv_events_in_treatment = sc(sum(tv$event[tv$in_treatment == 1])),
  help_zero_time = sc(sum(help$daysanysub == 0)),
  risk = list(
    uis_treat = risk_case(uis, "survfit(Surv(TIME, CENSOR) ~ TREAT, data = d)", uis_days),
    uis_site = risk_case(uis, "survfit(Surv(TIME, CENSOR) ~ SITE, data = d)", uis_days),
    help_treat = risk_case(help, "survfit(Surv(daysanysub, anysubstatus) ~ treat, data = d)", help_days),
    help_substance = risk_case(help, "survfit(Surv(daysanysub, anysubstatus) ~ substance, data = d)", help_days)
  ),
  logrank = list(
    uis_treat = lr_case(uis, "survdiff(Surv(TIME, CENSOR) ~ TREAT, data = d)"),
    uis_site = lr_case(uis, "survdiff(Surv(TIME, CENSOR) ~ SITE, data = d)"),
    help_treat = lr_case(help, "survdiff(Surv(daysanysub, anysubstatus) ~ treat, data = d)"),
    help_substance = lr_case(help, "survdiff(Surv(daysanysub, anysubstatus) ~ substance, data = d)")
  ),
  cox = list(
    uis_main = cox_case(uis, "coxph(Surv(TIME, CENSOR) ~ TREAT + SITE + AGE + NDT + factor(IV) + RACE + BECK, data = d, ties = \"efron\")"),
    uis_phases = cox_case(tv, "coxph(Surv(tstart, tstop, event) ~ long_in_treatment + long_after_exit + in_treatment + SITE + AGE + NDT + factor(IV) + RACE + BECK, data = d, ties = \"efron\")"),
    help_positive = cox_case(help, "coxph(Surv(daysanysub, anysubstatus) ~ treat + substance, data = d[d$daysanysub > 0, ], ties = \"efron\")"),
    help_all = cox_case(help, "coxph(Surv(daysanysub, anysubstatus) ~ treat + substance, data = d, ties = \"efron\")")
  )
)
writeLines(to_json(out), out_json)

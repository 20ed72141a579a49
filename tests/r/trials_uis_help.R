# Golden values for the UIS and HELP analyses of notebook 07 (iop_research.datasets loaders with
# iop_research.survival.km / _cox), from R survival.
#
# Usage (from the repository root):
#   Rscript --vanilla tests/r/trials_uis_help.R <datasets_dir> <out_json>
# Reads uis.csv and helprct.csv from <datasets_dir>. HELP rows with anysubstatus or daysanysub
# missing are excluded (as load_help does). UIS "CENSOR" is the event indicator.
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

medians <- function(fit) {
  tab <- summary(fit)$table
  if (is.null(dim(tab))) tab <- t(as.matrix(tab))
  list(strata = sub(".*=", "", rownames(tab)), n = unname(tab[, "records"]), events = unname(tab[, "events"]),
       median = unname(tab[, "median"]), conf_low = unname(tab[, "0.95LCL"]), conf_high = unname(tab[, "0.95UCL"]))
}
km_case <- function(d, call) {
  fit <- eval(parse(text = call))
  c(list(r_call = sc(call)), medians(fit))
}
lr_case <- function(d, call) {
  fit <- eval(parse(text = call))
  list(r_call = sc(call), chisq = sc(fit$chisq), df = sc(length(fit$n) - 1),
       observed = unname(fit$obs), expected = unname(fit$exp))
}
cox_case <- function(d, call) {
  fit <- eval(parse(text = call))
  list(r_call = sc(call), terms = names(coef(fit)), estimate = unname(coef(fit)),
       std_error = unname(sqrt(diag(vcov(fit)))), loglik = fit$loglik, n = sc(fit$n), nevent = sc(fit$nevent))
}

# time-varying in-treatment indicator: (0, min(LEN.T, TIME)] in treatment, (LEN.T, TIME] after exit
first <- transform(uis, start = 0, stop = pmin(LEN.T, TIME), event = ifelse(TIME > LEN.T, 0, CENSOR), in_treatment = 1)
after <- uis[uis$TIME > uis$LEN.T, ]
after <- transform(after, start = LEN.T, stop = TIME, event = CENSOR, in_treatment = 0)
uis_tv <- rbind(first, after)

out <- list(
  R = sc(R.version.string), survival = sc(as.character(packageVersion("survival"))),
  uis_rows = sc(nrow(uis)), help_rows = sc(nrow(help)), help_excluded = sc(nrow(help_raw) - nrow(help)),
  uis_tv_rows = sc(nrow(uis_tv)), help_zero_time = sc(sum(help$daysanysub == 0)),
  km = list(
    uis_treat = km_case(uis, "survfit(Surv(TIME, CENSOR) ~ TREAT, data = d)"),
    uis_site = km_case(uis, "survfit(Surv(TIME, CENSOR) ~ SITE, data = d)"),
    help_treat = km_case(help, "survfit(Surv(daysanysub, anysubstatus) ~ treat, data = d)"),
    help_substance = km_case(help, "survfit(Surv(daysanysub, anysubstatus) ~ substance, data = d)")
  ),
  logrank = list(
    uis_treat = lr_case(uis, "survdiff(Surv(TIME, CENSOR) ~ TREAT, data = d)"),
    uis_site = lr_case(uis, "survdiff(Surv(TIME, CENSOR) ~ SITE, data = d)"),
    help_treat = lr_case(help, "survdiff(Surv(daysanysub, anysubstatus) ~ treat, data = d)"),
    help_substance = lr_case(help, "survdiff(Surv(daysanysub, anysubstatus) ~ substance, data = d)")
  ),
  cox = list(
    uis_main = cox_case(uis, "coxph(Surv(TIME, CENSOR) ~ TREAT + SITE + AGE + NDT + factor(IV) + RACE + BECK, data = d, ties = \"efron\")"),
    uis_in_treatment = cox_case(uis_tv, "coxph(Surv(start, stop, event) ~ TREAT + in_treatment + TREAT:in_treatment + SITE + AGE + NDT + factor(IV) + RACE + BECK, data = d, ties = \"efron\")"),
    help_main = cox_case(help, "coxph(Surv(daysanysub, anysubstatus) ~ treat + substance, data = d, ties = \"efron\")"),
    # fit_cox requires durations > 0: the 11 HELP subjects with daysanysub == 0 are left out here
    help_positive = cox_case(help[help$daysanysub > 0, ], "coxph(Surv(daysanysub, anysubstatus) ~ treat + substance, data = d[d$daysanysub > 0, ], ties = \"efron\")")
  )
)
writeLines(to_json(out), out_json)

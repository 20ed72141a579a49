# Golden values for iop_research.survival.cox on the public UIS and HELP data (survival 3.5).
# Usage (repository root): Rscript --vanilla tests/r/cox_real.R <datasets_dir> <out_json>
suppressPackageStartupMessages(library(survival))
args <- commandArgs(trailingOnly = TRUE)
ddir <- args[1]; out <- args[2]

source("tests/r/json_arrays.R")
source("tests/r/cox_dump.R")

uis <- read.csv(file.path(ddir, "uis.csv"))
uis$IVf <- factor(uis$IV)
uis$w_int <- 1 + (uis$ID %% 3)
uis$w_frac <- 0.5 + (uis$ID %% 4) / 4
uis$cl <- uis$ID %% 40

res <- list(R_version = R.version.string, survival = as.character(packageVersion("survival")))
f_uis <- Surv(TIME, CENSOR) ~ TREAT + SITE + AGE + NDT + IVf + RACE + BECK
fit <- coxph(f_uis, data = uis)
res$uis_efron <- dump_fit(fit)
res$uis_zph_km <- dump_zph(fit, "km")
res$uis_zph_rank <- dump_zph(fit, "rank")
res$uis_zph_identity <- dump_zph(fit, "identity")
res$uis_zph_log <- dump_zph(fit, "log")
fitb <- coxph(f_uis, data = uis, ties = "breslow")
res$uis_breslow <- dump_fit(fitb)
res$uis_breslow_zph_km <- dump_zph(fitb, "km")
fits <- coxph(Surv(TIME, CENSOR) ~ TREAT + AGE + NDT + IVf + RACE + BECK + strata(SITE), data = uis)
res$uis_strata <- dump_fit(fits)
res$uis_strata_zph_km <- dump_zph(fits, "km")
fitw <- coxph(f_uis, data = uis, weights = w_int)
res$uis_weights <- dump_fit(fitw)
res$uis_weights_zph_km <- dump_zph(fitw, "km")
res$uis_weights_frac <- dump_fit(coxph(f_uis, data = uis, weights = w_frac, robust = FALSE))
res$uis_cluster <- dump_fit(coxph(Surv(TIME, CENSOR) ~ TREAT + SITE + AGE + NDT + IVf + RACE + BECK,
                                  data = uis, cluster = cl))
res$uis_robust <- dump_fit(coxph(f_uis, data = uis, robust = TRUE))
res$uis_cluster_breslow_weights <- dump_fit(coxph(f_uis, data = uis, cluster = cl, weights = w_int,
                                                  ties = "breslow"))

# time-varying in-treatment indicator: split each subject at LEN.T
a <- uis[uis$LEN.T < uis$TIME, ]
b <- uis[uis$LEN.T >= uis$TIME, ]
p1 <- transform(a, start = 0, stop = LEN.T, event = 0, intreat = 1)
p2 <- transform(a, start = LEN.T, stop = TIME, event = CENSOR, intreat = 0)
p3 <- transform(b, start = 0, stop = TIME, event = CENSOR, intreat = 1)
tv <- rbind(p1, p2, p3)
tv <- tv[order(tv$ID, tv$start), ]
fit_tv <- coxph(Surv(start, stop, event) ~ TREAT * intreat + SITE + AGE + NDT + IVf + RACE + BECK,
                data = tv, cluster = ID)
res$uis_tv <- dump_fit(fit_tv)
fit_tv0 <- coxph(Surv(start, stop, event) ~ TREAT * intreat + SITE + AGE + NDT + IVf + RACE + BECK,
                 data = tv)
res$uis_tv_naive <- dump_fit(fit_tv0)
res$uis_tv_zph_km <- dump_zph(fit_tv0, "km")
res$uis_tv_zph_rank <- dump_zph(fit_tv0, "rank")

help <- read.csv(file.path(ddir, "helprct.csv"))
# rows with daysanysub == 0 are excluded explicitly: fit_cox requires durations > 0
help <- help[!is.na(help$anysubstatus) & !is.na(help$daysanysub), ]
# all complete rows, including the 11 with daysanysub == 0 (R's Surv accepts time 0)
res$help_with_zero <- dump_fit(coxph(Surv(daysanysub, anysubstatus) ~ treat + substance + age + female, data = help))
help <- help[help$daysanysub > 0, ]
fith <- coxph(Surv(daysanysub, anysubstatus) ~ treat + substance + age + female, data = help)
res$help_efron <- dump_fit(fith)
res$help_zph_km <- dump_zph(fith, "km")
res$help_zph_rank <- dump_zph(fith, "rank")
res$help_zph_identity <- dump_zph(fith, "identity")
res$help_breslow <- dump_fit(coxph(Surv(daysanysub, anysubstatus) ~ treat + substance + age + female,
                                   data = help, ties = "breslow"))

writeLines(to_json(res), out)

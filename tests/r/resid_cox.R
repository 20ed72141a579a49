# Golden values for iop_research.survival.residuals: residuals.coxph (survival 3.5) of every type,
# with collapse by cluster. Data: UIS and HELP (shared datasets), tests/golden/data/cox_recurrent.csv.
# Usage (repository root): Rscript --vanilla tests/r/resid_cox.R <datasets_dir> <out_json>
suppressPackageStartupMessages(library(survival))
args <- commandArgs(trailingOnly = TRUE)
ddir <- args[1]; out <- args[2]
source("tests/r/json_arrays.R")

# matrices are kept for every 5th row (file size); vectors in full
sub <- function(m) m[seq(1, nrow(m), by = 5), , drop = FALSE]
types <- c("martingale", "deviance", "score", "schoenfeld", "scaledsch", "dfbeta", "dfbetas")
dump_resid <- function(fit, collapse = NULL) {
  r <- list()
  for (ty in types) {
    v <- residuals(fit, type = ty)
    r[[ty]] <- if (is.matrix(v)) unname(sub(v)) else unname(as.vector(v))
    if (ty == "schoenfeld") r$schoenfeld_time <- as.numeric(if (is.matrix(v)) rownames(v) else names(v))
  }
  r$score_weighted <- unname(sub(as.matrix(residuals(fit, type = "score", weighted = TRUE))))
  if (!is.null(collapse)) {
    for (ty in c("martingale", "deviance", "score", "dfbeta", "dfbetas")) {
      v <- residuals(fit, type = ty, collapse = collapse)
      r[[paste0(ty, "_collapsed")]] <- unname(if (is.matrix(v)) sub(v) else v)
    }
  }
  r
}

uis <- read.csv(file.path(ddir, "uis.csv"))
uis$IVf <- factor(uis$IV)
uis$w_frac <- 0.5 + (uis$ID %% 4) / 4
uis$cl <- uis$ID %% 40
res <- list(R_version = R.version.string, survival = as.character(packageVersion("survival")))
f_uis <- Surv(TIME, CENSOR) ~ TREAT + SITE + AGE + NDT + IVf + RACE + BECK
res$uis_efron <- dump_resid(coxph(f_uis, data = uis), collapse = uis$cl)
res$uis_strata <- dump_resid(coxph(Surv(TIME, CENSOR) ~ TREAT + AGE + NDT + IVf + RACE + BECK + strata(SITE), data = uis))
res$uis_weights <- dump_resid(coxph(f_uis, data = uis, weights = w_frac, robust = FALSE))

a <- uis[uis$LEN.T < uis$TIME, ]
b <- uis[uis$LEN.T >= uis$TIME, ]
tv <- rbind(transform(a, start = 0, stop = LEN.T, event = 0, intreat = 1),
            transform(a, start = LEN.T, stop = TIME, event = CENSOR, intreat = 0),
            transform(b, start = 0, stop = TIME, event = CENSOR, intreat = 1))
res$uis_tv <- dump_resid(coxph(Surv(start, stop, event) ~ TREAT + intreat + SITE + AGE + NDT + IVf + RACE + BECK,
                               data = tv), collapse = tv$ID)

help <- read.csv(file.path(ddir, "helprct.csv"))
help <- help[!is.na(help$anysubstatus) & !is.na(help$daysanysub) & help$daysanysub > 0, ]
res$help <- dump_resid(coxph(Surv(daysanysub, anysubstatus) ~ treat + substance + age + female, data = help))

rec <- read.csv("tests/golden/data/cox_recurrent.csv")
res$recurrent <- dump_resid(coxph(Surv(start, stop, event) ~ x1 + x2 + grp + mat, data = rec, cluster = id),
                            collapse = rec$id)
res$recurrent_breslow <- dump_resid(coxph(Surv(start, stop, event) ~ x1 + x2 + grp + mat, data = rec,
                                          ties = "breslow"))
writeLines(to_json(res), out)

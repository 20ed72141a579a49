# Golden values for iop_research.survival.frailty.fit_frailty (survival::coxph with a shared gamma frailty).
# Data: tests/golden/data/frailty_programmes.csv (written by tests/r/make_frailty_data.py): patients in 40
# programmes (sparse frailty computation, > 5 groups) and the same patients grouped by 4 regions (non-sparse);
# tests/golden/data/frailty_recurrent.csv: repeated relapses as (start, stop] rows with a patient frailty.
# Usage (repository root): Rscript --vanilla tests/r/frailty.R <datasets_dir (unused)> <out_json>
# theta: R's default method = "em" maximises the integrated (marginal) log-likelihood over theta by a
# bracketing search that stops when it changes by less than eps (1e-5, relative); here eps = 1e-10 and the
# inner Newton iterations are converged to 1e-12, so that R's theta is the maximiser to ~1e-6. The default
# fit is dumped too (default_*), to show how far R's default stopping rule is from the maximum.
suppressPackageStartupMessages(library(survival))
args <- commandArgs(trailingOnly = TRUE)
out <- args[2]
source("tests/r/json.R")

d <- read.csv("tests/golden/data/frailty_programmes.csv")
ctl <- coxph.control(eps = 1e-12, toler.chol = 1e-13, iter.max = 100, outer.max = 200)

dump_frail <- function(f) {
  h <- f$history[[1]]
  hist <- h$history
  theta <- if (is.null(hist)) h$theta else hist[nrow(hist), 1]
  nb <- length(f$coefficients)
  list(term = names(f$coefficients), estimate = unname(f$coefficients),
       std_error = unname(sqrt(diag(f$var))[seq_len(nb)]), se2 = unname(sqrt(diag(f$var2))[seq_len(nb)]),
       theta = sc(theta), c_loglik = sc(h$c.loglik), loglik = f$loglik,
       history_theta = if (is.null(hist)) NULL else hist[, 1],
       history_loglik = if (is.null(hist)) NULL else hist[, 2],
       history_c_loglik = if (is.null(hist)) NULL else hist[, 3],
       frail = f$frail, frailty_df = sc(f$df[length(f$df)]), n = sc(f$n), nevent = sc(f$nevent))
}

res <- list(R_version = R.version.string, survival = as.character(packageVersion("survival")))
res$program_efron <- dump_frail(coxph(Surv(days, relapse) ~ mat + age + sex +
                                        frailty(program, distribution = "gamma", eps = 1e-10),
                                      data = d, control = ctl))
res$program_breslow <- dump_frail(coxph(Surv(days, relapse) ~ mat + age + sex +
                                          frailty(program, distribution = "gamma", eps = 1e-10),
                                        data = d, ties = "breslow", control = ctl))
res$region_efron <- dump_frail(coxph(Surv(days, relapse) ~ mat + age + sex +
                                       frailty(region, distribution = "gamma", eps = 1e-10),
                                     data = d, control = ctl))
res$program_fixed_theta <- dump_frail(coxph(Surv(days, relapse) ~ mat + age + sex +
                                              frailty(program, distribution = "gamma", theta = 0.8),
                                            data = d, control = ctl))
rec <- read.csv("tests/golden/data/frailty_recurrent.csv")
res$recurrent_efron <- dump_frail(coxph(Surv(start, stop, relapse) ~ mat + age +
                                          frailty(id, distribution = "gamma", eps = 1e-10),
                                        data = rec, control = ctl))
res$default_program_efron <- dump_frail(coxph(Surv(days, relapse) ~ mat + age + sex +
                                                frailty(program, distribution = "gamma"), data = d))
writeLines(to_json(res), out)

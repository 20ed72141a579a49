# Golden values for iop_research.designs.causal.iptw on the HELP trial (shared datasets dir).
# Call (repo root): Rscript --vanilla tests/r/causal_help.R <datasets_dir> <out_json>
#
# Analysis sample: rows with non-missing daysanysub and anysubstatus (mirrored in
# tests/test_causal.py::help_cc). treat01 = (treat == "yes"); homeless01 = (homeless == "homeless").
# Propensity: glm(treat01 ~ age + female + substance + cesd + homeless01, binomial); substance is a
# factor with reference level "alcohol" (R's default alphabetical treatment contrasts).
suppressPackageStartupMessages(library(survival))
source("tests/r/cr_json.R")
args <- commandArgs(trailingOnly = TRUE)
source("tests/r/help_cc.R")
h <- read_help_cc(args[1])
out <- args[2]

ps_fit <- glm(treat01 ~ age + female + substance + cesd + homeless01, family = binomial, data = h)
ps <- unname(fitted(ps_fit))
p1 <- mean(h$treat01)
tr <- h$treat01 == 1
h$w_ate_s <- ifelse(tr, p1 / ps, (1 - p1) / (1 - ps))
h$w_ate <- ifelse(tr, 1 / ps, 1 / (1 - ps))
h$w_att <- ifelse(tr, 1, ps / (1 - ps))
h$w_overlap <- ifelse(tr, 1 - ps, ps)

fit_cox <- function(w) {
  f <- if (is.null(w)) coxph(Surv(daysanysub, anysubstatus) ~ treat01, data = h)
       else coxph(Surv(daysanysub, anysubstatus) ~ treat01, data = h, weights = h[[w]], robust = TRUE)
  list(coef = as_array(unname(coef(f))), se = as_array(unname(sqrt(diag(f$var)))), naive_se = as_array(unname(sqrt(diag(
    if (is.null(f$naive.var)) f$var else f$naive.var)))))
}

# IPTW-weighted Kaplan-Meier (point estimates) at 30, 90, 180 days
km <- summary(survfit(Surv(daysanysub, anysubstatus) ~ treat01, data = h, weights = w_ate_s), times = c(30, 90, 180))
km_w <- list(strata = as_array(as.character(km$strata)), time = as_array(km$time), surv = as_array(km$surv))

write_json(list(
  km_weighted = km_w,
  rownames = as_array(h$rownames),
  ps_coef = as_array(unname(coef(ps_fit))), ps_terms = as_array(names(coef(ps_fit))),
  ps_se = as_array(unname(sqrt(diag(vcov(ps_fit))))),
  ps = as_array(ps),
  w_ate_s = as_array(h$w_ate_s), w_ate = as_array(h$w_ate), w_att = as_array(h$w_att),
  w_overlap = as_array(h$w_overlap),
  cox_unweighted = fit_cox(NULL),
  cox_ate_s = fit_cox("w_ate_s"),
  cox_att = fit_cox("w_att"),
  cox_overlap = fit_cox("w_overlap")
), out)

# Golden values for iop_research/_interval.py (fit_interval_aft, fit_turnbull) from R survival.
#
#
# Usage (from the repository root):
#   Rscript --vanilla tests/r/interval_aft.R <datasets_dir> <out_json>
# Reads tests/golden/data/interval_teds.csv and interval_visits.csv (written by
# tests/r/make_interval_data.py); <datasets_dir> is unused. Empty upper = right-censored.
suppressPackageStartupMessages(library(survival))

args <- commandArgs(trailingOnly = TRUE)
out_json <- args[2]
# ---------------------------------------------------------------- JSON
source("tests/r/json.R")

teds <- read.csv("tests/golden/data/interval_teds.csv")
visits <- read.csv("tests/golden/data/interval_visits.csv")
visits$lower[visits$lower == 0] <- NA  # left-censored: R codes lower as NA (Python: 0)
# categorical covariates: discharge reason as a factor (reference "completed", the first sorted
# level, as iop_research._design) and MAT as a logical (Python: bool column mat_b)
teds_cat <- transform(teds,
  reason = factor(ifelse(completed == 1, "completed", ifelse(dropped_out == 1, "dropped_out", "other")),
                  levels = c("completed", "dropped_out", "other")),
  mat_b = mat == 1)
data_of <- list(teds = teds, visits = visits, teds_cat = teds_cat)

aft_case <- function(data, rhs, dist) {
  d <- data_of[[data]]
  call <- sprintf("survreg(Surv(lower, upper, type = \"interval2\") ~ %s, data = d, dist = \"%s\")", rhs, dist)
  fit <- eval(parse(text = sub("survreg\\(", "survreg(control = survreg.control(rel.tolerance = 1e-12, iter.max = 100), ", call)))
  v <- vcov(fit)
  list(data = sc(data), dist = sc(dist), rhs = sc(rhs),
       r_call = sc(paste0(call, " with survreg.control(rel.tolerance = 1e-12)")),
       terms = c(names(coef(fit)), "Log(scale)"),
       estimate = c(unname(coef(fit)), log(fit$scale)),
       std_error = unname(sqrt(diag(v))),
       loglik = sc(fit$loglik[2]), scale = sc(fit$scale), n = sc(nrow(d)))
}

turnbull_case <- function(data, group, times) {
  d <- data_of[[data]]
  rhs <- if (is.null(group)) "1" else group
  call <- sprintf("survfit(Surv(lower, upper, type = \"interval2\") ~ %s, data = d)", rhs)
  fit <- eval(parse(text = call))
  s <- summary(fit, times = times, extend = TRUE)
  strata <- if (is.null(s$strata)) rep("all", length(s$time)) else sub(".*=", "", as.character(s$strata))
  list(data = sc(data), group = if (is.null(group)) NULL else sc(group), r_call = sc(call),
       time = s$time, surv = s$surv, strata = strata,
       note = sc("survfitTurnbull stops when the largest change < 5e-5 (not the exact NPMLE)"))
}

out <- list(
  R = sc(R.version.string), survival = sc(as.character(packageVersion("survival"))),
  aft = list(
    aft_case("teds", "completed + dropped_out + mat", "weibull"),
    aft_case("teds", "completed + dropped_out + mat", "loglogistic"),
    aft_case("visits", "treat + age", "weibull"),
    aft_case("visits", "treat + age", "loglogistic"),
    aft_case("visits", "treat", "lognormal"),
    aft_case("teds_cat", "reason + mat_b", "weibull"),
    aft_case("teds_cat", "reason + mat_b", "loglogistic")
  ),
  turnbull = list(
    turnbull_case("teds", NULL, c(1, 7, 14, 30, 45, 60, 90, 120, 180, 365)),
    turnbull_case("teds", "mat", c(7, 30, 45, 90, 365)),
    turnbull_case("visits", NULL, c(0, 14, 30, 60, 90, 120, 180)),
    turnbull_case("visits", "treat", c(30, 60, 90, 180))
  )
)
writeLines(to_json(out), out_json)

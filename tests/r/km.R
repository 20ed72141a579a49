# Golden values for iop_research/_km.py (fit_km, logrank_test, rmst) from R survival.
#
# Usage (from the repository root):
#   Rscript --vanilla tests/r/km.R <datasets_dir> <out_json>
# Reads uis.csv and helprct.csv from <datasets_dir>, and tests/golden/data/km_sim.csv,
# tests/golden/data/km_edge.csv (written by tests/r/make_km_data.py).
# Every case stores the Python call's arguments ("spec"), the R call ("r_call") and R's numbers.
# Writes JSON without jsonlite: NA -> null, NaN -> NaN, Inf -> Infinity (Python's json reads these).
suppressPackageStartupMessages(library(survival))

args <- commandArgs(trailingOnly = TRUE)
ddir <- args[1]
out_json <- args[2]

# ---------------------------------------------------------------- data
uis <- read.csv(file.path(ddir, "uis.csv"))
uis <- uis[complete.cases(uis), ]
help_raw <- read.csv(file.path(ddir, "helprct.csv"))
help_dropped <- sum(is.na(help_raw$anysubstatus) | is.na(help_raw$daysanysub))
help <- help_raw[!is.na(help_raw$anysubstatus) & !is.na(help_raw$daysanysub), ]
sim <- read.csv("tests/golden/data/km_sim.csv")
sim_ab <- sim[sim$arm %in% c("a", "b"), ]
sim_unbal <- sim[!(sim$arm == "c" & sim$site == "s2"), ]  # arm c absent from stratum s2
edge <- read.csv("tests/golden/data/km_edge.csv")
get_data <- function(name) {
  if (startsWith(name, "edge:")) return(edge[edge$case == sub("edge:", "", name), ])
  switch(name, uis = uis, help = help, sim = sim, sim_ab = sim_ab, sim_unbal = sim_unbal, stop("unknown data ", name))
}

# ---------------------------------------------------------------- JSON
source("tests/r/json.R")

# ---------------------------------------------------------------- helpers
surv_lhs <- function(spec) {
  if (!is.null(spec$entry_col))
    sprintf("Surv(%s, %s, %s)", spec$entry_col, spec$duration_col, spec$event_col)
  else sprintf("Surv(%s, %s)", spec$duration_col, spec$event_col)
}

km_case <- function(spec, robust = NULL) {
  d <- get_data(spec$data)
  rhs <- if (is.null(spec$group_col)) "1" else spec$group_col
  call <- sprintf("survfit(%s ~ %s, data = d", surv_lhs(spec), rhs)
  if (!is.null(spec$weights_col)) call <- paste0(call, ", weights = ", spec$weights_col)
  if (!is.null(robust)) call <- paste0(call, ", robust = ", robust)
  call <- paste0(call, sprintf(", conf.type = \"%s\", conf.int = %s)",
                               if (is.null(spec$conf_type)) "log" else spec$conf_type,
                               if (is.null(spec$conf_level)) 0.95 else spec$conf_level))
  fit <- eval(parse(text = call))
  ns <- if (is.null(fit$strata)) 1 else length(fit$strata)
  labs <- if (is.null(fit$strata)) "all" else sub("^[^=]*=", "", names(fit$strata))
  groups <- list()
  for (i in seq_len(ns)) {
    f <- if (ns == 1) fit else fit[i]
    s <- summary(f, censored = TRUE)
    tab <- summary(f)$table
    g <- list(label = sc(labs[i]), time = s$time, n_risk = s$n.risk, n_event = s$n.event,
              n_censor = s$n.censor, surv = s$surv, std_err = s$std.err, lower = s$lower,
              upper = s$upper, std_err_log = f$std.err,
              median = sc(tab[["median"]]), median_lcl = sc(tab[[grep("LCL", names(tab))]]),
              median_ucl = sc(tab[[grep("UCL", names(tab))]]),
              n = sc(tab[["records"]]), events = sc(tab[["events"]]))
    if (!is.null(spec$times)) {
      a <- summary(f, times = unlist(spec$times), extend = TRUE)
      g$at_times <- list(time = a$time, n_risk = a$n.risk, n_event = a$n.event,
                         n_censor = a$n.censor, surv = a$surv, std_err = a$std.err,
                         lower = a$lower, upper = a$upper)
    }
    groups[[i]] <- g
  }
  # logse FALSE: robust (infinitesimal jackknife) variance, std.err on the survival scale
  list(kind = sc("km"), spec = spec, r_call = sc(call), logse = sc(fit$logse), groups = groups)
}

# Fleming-Harrington G(rho, gamma) by the textbook formula (Klein & Moeschberger 7.3),
# one loop per distinct event time; S is the pooled KM just before t, within stratum.
fh_direct <- function(time, event, group, rho, gamma, strata = NULL) {
  if (is.null(strata)) strata <- rep(1, length(time))
  lev <- sort(unique(group)); k <- length(lev)
  O <- E <- rep(0, k); V <- matrix(0, k, k)
  for (s in unique(strata)) {
    i <- strata == s; t <- time[i]; e <- event[i]; g <- group[i]
    S <- 1
    for (u in sort(unique(t[e == 1]))) {
      n_g <- sapply(lev, function(l) sum(t >= u & g == l)); n <- sum(n_g)
      d_g <- sapply(lev, function(l) sum(t == u & e == 1 & g == l)); d <- sum(d_g)
      w <- S^rho * (1 - S)^gamma
      O <- O + w * d_g
      E <- E + w * d * n_g / n
      if (n > 1) V <- V + w^2 * d * (n - d) / (n - 1) * (diag(n_g / n, k) - outer(n_g / n, n_g / n))
      S <- S * (1 - d / n)
    }
  }
  list(obs = O, exp = E, var = V)
}

lr_finish <- function(obs, exp, var, n, scores = NULL) {
  keep <- exp > 0
  if (sum(keep) < 2) chisq <- 0 else {
    u <- (obs - exp)[keep][-1]
    vv <- var[keep, keep, drop = FALSE][-1, -1, drop = FALSE]
    chisq <- sum(solve(vv, u) * u)
  }
  df <- sum(keep) - 1
  res <- list(n = n, obs = obs, exp = exp, var = var, chisq = sc(chisq), df = sc(df),
              p = sc(pchisq(chisq, df, lower.tail = FALSE)))
  if (!is.null(scores)) {
    tr <- sum(scores * (obs - exp))^2 / as.numeric(t(scores) %*% var %*% scores)
    res$trend <- list(scores = scores, chisq = sc(tr), df = sc(1), p = sc(pchisq(tr, 1, lower.tail = FALSE)))
  }
  res
}

lr_case <- function(spec, scores = NULL, expand = FALSE) {
  d <- get_data(spec$data)
  rho <- if (is.null(spec$rho)) 0 else spec$rho
  gamma <- if (is.null(spec$gamma)) 0 else spec$gamma
  rhs <- spec$group_col
  if (!is.null(spec$strata_col)) rhs <- sprintf("%s + strata(%s)", rhs, spec$strata_col)
  if (gamma == 0) {
    dd <- if (expand) "d[rep(seq_len(nrow(d)), d[[spec$weights_col]]), ]" else "d"
    call <- sprintf("survdiff(%s ~ %s, data = %s, rho = %s)", surv_lhs(spec), rhs, dd, rho)
    fit <- eval(parse(text = call))
    obs <- if (is.matrix(fit$obs)) rowSums(fit$obs) else fit$obs
    n <- as.vector(table(d[[spec$group_col]]))
    ex <- if (is.matrix(fit$exp)) rowSums(fit$exp) else fit$exp
    res <- lr_finish(obs, ex, fit$var, n, scores)
    stopifnot(isTRUE(all.equal(res$chisq[1], fit$chisq, check.attributes = FALSE)))
    if (!expand) {  # the direct formula reproduces survdiff: it is then trusted for gamma > 0
      st <- if (is.null(spec$strata_col)) NULL else d[[spec$strata_col]]
      h <- fh_direct(d[[spec$duration_col]], d[[spec$event_col]], d[[spec$group_col]], rho, 0, st)
      stopifnot(isTRUE(all.equal(h$obs, obs, check.attributes = FALSE)),
                isTRUE(all.equal(h$exp, as.vector(ex), check.attributes = FALSE)),
                isTRUE(all.equal(h$var, unname(fit$var), check.attributes = FALSE)))
    }
  } else {
    st <- if (is.null(spec$strata_col)) "NULL" else sprintf("d$%s", spec$strata_col)
    call <- sprintf("fh_direct(d$%s, d$%s, d$%s, rho = %s, gamma = %s, strata = %s)",
                    spec$duration_col, spec$event_col, spec$group_col, rho, gamma, st)
    h <- eval(parse(text = call))
    res <- lr_finish(h$obs, h$exp, h$var, as.vector(table(d[[spec$group_col]])), scores)
  }
  c(list(kind = sc("logrank"), spec = spec, r_call = sc(call),
         labels = sort(unique(as.character(d[[spec$group_col]])))), res)
}

rmst_case <- function(spec) {
  d <- get_data(spec$data)
  tau <- spec$tau
  rhs <- if (is.null(spec$group_col)) "1" else spec$group_col
  call <- sprintf("summary(survfit(%s ~ %s, data = d), rmean = %s)$table", surv_lhs(spec), rhs, tau)
  tab <- eval(parse(text = call))
  if (!is.matrix(tab)) tab <- matrix(tab, nrow = 1, dimnames = list("all", names(tab)))
  est <- tab[, "rmean"]; se <- tab[, "se(rmean)"]
  # survRM2::rmst1's variance formula, written out, agrees with survmean's se(rmean)
  fit <- eval(parse(text = sprintf("survfit(%s ~ %s, data = d)", surv_lhs(spec), rhs)))
  for (i in seq_along(est)) {
    f <- if (is.null(fit$strata)) fit else fit[i]
    idx <- f$time <= tau
    wk.time <- sort(c(f$time[idx], tau)); wk.surv <- f$surv[idx]
    wk.n.risk <- f$n.risk[idx]; wk.n.event <- f$n.event[idx]
    areas <- diff(c(0, wk.time)) * c(1, wk.surv)
    wk.var <- c(ifelse((wk.n.risk - wk.n.event) == 0, 0, wk.n.event / (wk.n.risk * (wk.n.risk - wk.n.event))), 0)
    v <- sum(cumsum(rev(areas[-1]))^2 * rev(wk.var)[-1])
    stopifnot(isTRUE(all.equal(sum(areas), unname(est[i]))), isTRUE(all.equal(sqrt(v), unname(se[i]))))
  }
  z <- qnorm(1 - (1 - (if (is.null(spec$conf_level)) 0.95 else spec$conf_level)) / 2)
  res <- list(kind = sc("rmst"), spec = spec, r_call = sc(call),
              labels = sub("^[^=]*=", "", rownames(tab)), rmst = unname(est), se = unname(se))
  if (length(est) == 2) {
    dif <- est[2] - est[1]; se_d <- sqrt(se[1]^2 + se[2]^2)
    res$difference <- list(est = sc(dif), se = sc(se_d), low = sc(dif - z * se_d), high = sc(dif + z * se_d),
                           p = sc(2 * pnorm(-abs(dif / se_d))))
    lr <- log(est[2] / est[1]); se_r <- sqrt(se[2]^2 / est[2]^2 + se[1]^2 / est[1]^2)
    res$ratio <- list(est = sc(exp(lr)), se_log = sc(se_r), low = sc(exp(lr - z * se_r)),
                      high = sc(exp(lr + z * se_r)), p = sc(2 * pnorm(-abs(lr / se_r))))
  }
  res
}

# ---------------------------------------------------------------- cases
cases <- list()
S <- function(...) list(...)
t3 <- list(90, 180, 365)

# UIS: TIME, CENSOR (= event), TREAT, SITE, IV
for (ct in c("log", "log-log", "plain"))
  cases[[paste0("km_uis_treat_", ct)]] <- km_case(S(data = "uis", duration_col = "TIME", event_col = "CENSOR",
                                                   group_col = "TREAT", conf_type = ct, times = t3))
cases$km_uis_all <- km_case(S(data = "uis", duration_col = "TIME", event_col = "CENSOR", times = t3))
cases$km_uis_site_90 <- km_case(S(data = "uis", duration_col = "TIME", event_col = "CENSOR",
                                  group_col = "SITE", conf_level = 0.9, times = t3))
cases$lr_uis_treat <- lr_case(S(data = "uis", duration_col = "TIME", event_col = "CENSOR", group_col = "TREAT"))
cases$lr_uis_treat_rho1 <- lr_case(S(data = "uis", duration_col = "TIME", event_col = "CENSOR", group_col = "TREAT", rho = 1))
cases$lr_uis_treat_site <- lr_case(S(data = "uis", duration_col = "TIME", event_col = "CENSOR", group_col = "TREAT",
                                     strata_col = "SITE"))
cases$lr_uis_iv_trend <- lr_case(S(data = "uis", duration_col = "TIME", event_col = "CENSOR", group_col = "IV",
                                   trend = TRUE), scores = c(1, 2, 3))
cases$lr_uis_iv_site_trend <- lr_case(S(data = "uis", duration_col = "TIME", event_col = "CENSOR", group_col = "IV",
                                        strata_col = "SITE", trend = TRUE), scores = c(1, 2, 3))
cases$lr_uis_treat_fh11 <- lr_case(S(data = "uis", duration_col = "TIME", event_col = "CENSOR", group_col = "TREAT",
                                     rho = 1, gamma = 1))
for (tau in c(180, 365))
  cases[[paste0("rmst_uis_treat_", tau)]] <- rmst_case(S(data = "uis", duration_col = "TIME", event_col = "CENSOR",
                                                          group_col = "TREAT", tau = tau))
cases$rmst_uis_all_365 <- rmst_case(S(data = "uis", duration_col = "TIME", event_col = "CENSOR", tau = 365))

# HELP: daysanysub, anysubstatus, treat (no/yes), substance (alcohol < cocaine < heroin)
for (g in c("treat", "substance"))
  cases[[paste0("km_help_", g)]] <- km_case(S(data = "help", duration_col = "daysanysub", event_col = "anysubstatus",
                                              group_col = g, times = t3))
cases$lr_help_treat <- lr_case(S(data = "help", duration_col = "daysanysub", event_col = "anysubstatus", group_col = "treat"))
cases$lr_help_treat_rho1 <- lr_case(S(data = "help", duration_col = "daysanysub", event_col = "anysubstatus",
                                      group_col = "treat", rho = 1))
cases$lr_help_treat_substance <- lr_case(S(data = "help", duration_col = "daysanysub", event_col = "anysubstatus",
                                           group_col = "treat", strata_col = "substance"))
cases$lr_help_substance_trend <- lr_case(S(data = "help", duration_col = "daysanysub", event_col = "anysubstatus",
                                           group_col = "substance", trend = TRUE), scores = c(1, 2, 3))
cases$rmst_help_treat_180 <- rmst_case(S(data = "help", duration_col = "daysanysub", event_col = "anysubstatus",
                                         group_col = "treat", tau = 180))

# simulated: ties, case weights, left truncation, strata
sim_spec <- function(...) c(list(data = "sim", duration_col = "days", event_col = "event"), list(...))
cases$km_sim_arm <- km_case(sim_spec(group_col = "arm", times = list(0, 30, 90, 180, 365, 500)))
cases$km_sim_w <- km_case(sim_spec(group_col = "arm", weights_col = "w", times = list(30, 90, 180)))
cases$km_sim_wf <- km_case(sim_spec(group_col = "arm", weights_col = "wf", times = list(30, 90, 180)), robust = FALSE)
# R's default for non-integer weights: robust = TRUE (compared with fit_km's extra["robust"])
cases$km_sim_wf_robust <- km_case(sim_spec(group_col = "arm", weights_col = "wf"))
cases$km_sim_wf_entry_robust <- km_case(sim_spec(group_col = "arm", weights_col = "wf", entry_col = "entry",
                                                 conf_type = "log-log"))
cases$km_sim_entry <- km_case(sim_spec(group_col = "arm", entry_col = "entry", times = list(0, 10.5, 90, 180)))
cases$km_sim_entry_w_loglog <- km_case(sim_spec(entry_col = "entry", weights_col = "w", conf_type = "log-log",
                                                times = list(30, 90)))
cases$lr_sim <- lr_case(sim_spec(group_col = "arm", trend = TRUE), scores = c(1, 2, 3))
cases$lr_sim_site <- lr_case(sim_spec(group_col = "arm", strata_col = "site"))
cases$lr_sim_w <- lr_case(sim_spec(group_col = "arm", weights_col = "w"), expand = TRUE)
cases$lr_sim_w_site_rho1 <- lr_case(sim_spec(group_col = "arm", weights_col = "w", strata_col = "site", rho = 1),
                                    expand = TRUE)
cases$lr_sim_unbal_site <- lr_case(list(data = "sim_unbal", duration_col = "days", event_col = "event",
                                        group_col = "arm", strata_col = "site", rho = 1))
cases$lr_sim_rho05 <- lr_case(sim_spec(group_col = "arm", rho = 0.5))
cases$lr_sim_fh01 <- lr_case(sim_spec(group_col = "arm", rho = 0, gamma = 1))
cases$lr_sim_fh11_site <- lr_case(sim_spec(group_col = "arm", rho = 1, gamma = 1, strata_col = "site"))
cases$lr_sim_fh0505_trend <- lr_case(sim_spec(group_col = "arm", rho = 0.5, gamma = 0.5, trend = TRUE),
                                     scores = c(1, 2, 3))
cases$rmst_sim_ab_180 <- rmst_case(list(data = "sim_ab", duration_col = "days", event_col = "event",
                                        group_col = "arm", tau = 180, conf_level = 0.9))

# edge cases
edge_spec <- function(case, ...) c(list(data = paste0("edge:", case), duration_col = "days", event_col = "event"), list(...))
for (case in unique(edge$case)) {
  cases[[paste0("km_edge_", case)]] <- km_case(edge_spec(case, group_col = "arm", times = list(0, 2, 5, 20)))
  cases[[paste0("km_edge_", case, "_all")]] <- km_case(edge_spec(case, weights_col = "w", conf_type = "log-log",
                                                                 times = list(0, 4)))
  cases[[paste0("km_edge_", case, "_plain")]] <- km_case(edge_spec(case, group_col = "arm", conf_type = "plain"))
  if (case != "all_censored") {
    cases[[paste0("lr_edge_", case)]] <- lr_case(edge_spec(case, group_col = "arm"))
    cases[[paste0("lr_edge_", case, "_rho1")]] <- lr_case(edge_spec(case, group_col = "arm", rho = 1))
  }
}
cases$km_edge_zero_weight_robust <- km_case(edge_spec("zero_weight", group_col = "arm", weights_col = "w",
                                                      conf_type = "plain"), robust = TRUE)
cases$rmst_edge_group_no_events <- rmst_case(edge_spec("group_no_events", group_col = "arm", tau = 8))
cases$rmst_edge_ties <- rmst_case(edge_spec("ties", group_col = "arm", tau = 9))

out <- list(
  R_version = sc(R.version.string),
  survival_version = sc(as.character(packageVersion("survival"))),
  cmprsk_version = sc(as.character(packageVersion("cmprsk"))),
  help_rows_dropped = sc(help_dropped),
  help_rows_used = sc(nrow(help)),
  uis_rows_used = sc(nrow(uis)),
  cases = cases
)
writeLines(to_json(out), out_json)

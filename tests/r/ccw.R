# Golden values for iop_research.designs.ccw.clone_censor_weight, written out with base glm and
# survival::survfit only (no target-trial package).
# Call (repo root): Rscript --vanilla tests/r/ccw.R <datasets_dir (unused)> <out_json>
# Reads tests/golden/data/ccw_persons.csv, ccw_deviation.csv and ccw_clones.csv
# (written by tests/r/make_ccw_data.py; grace period 21 days, horizon 120 days), and the
# ccw_sustained_* files for sustained_treatment (stop within 14 days vs sustain 30 days).
#
# 1. Deviation model: glm(started ~ age + sex + day [+ I(day^2)], family = binomial) (convergence
#    epsilon 1e-12, so the estimates are settled to the tolerance the test uses) on the
#    person-days at risk of starting (days 0..min(21, days, moud_day)).
# 2. p_d for every person and day 0..21; S_dev(d) = prod_{u <= d} (1 - p_u).
# 3. Weights: "no_start" row (start, stop]: 1 / S_dev(start) (start = d - 1 inside the grace
#    period, = 21 after it); "start": 1 on (0, .], 1 / (1 - S_dev(21)) on (21, .].
# 4. survfit(Surv(start, stop, event) ~ strategy, weights = w); S at days 0..120
#    (summary(times = , extend = TRUE)); risk = 1 - S(120); difference and ratio start vs no_start.
# Cases "tv" and "sustained_tv": time-varying covariates uds_pos and craving from the counting-process
#    frames ccw_tv.csv / ccw_sustained_tv.csv (id, start, stop]: person-day d takes the row with
#    start < max(d, 1) <= stop (day 0 takes the first interval), merged here in R; days after the end of
#    a person's rows (never used by the weights) take the last row.
# Case "regime" (grace_weights = "regime"): the "start" clone rows are rebuilt in R from the persons
#    file (daily (d-1, d] until the start day or G, then (T, end]) with weights
#    (pi - F(d-1)) / (pi (1 - F(d-1))) while not yet started and 1 / pi after the start day T <= G,
#    F(d) = 1 - S_dev(d), pi = F(21); "no_start" as in "linear".
# 5. Hazard ratio: clone rows expanded to person-days (day = start + 1 .. stop, event on stop),
#    glm(event ~ is_start + t + I(t^2), family = quasibinomial, weights = w), t = day / 120.
suppressPackageStartupMessages(library(survival))
source("tests/r/json.R")
args <- commandArgs(trailingOnly = TRUE)
out <- args[2]
G <- 21
H <- 120
read_case <- function(prefix, tv = FALSE) {
  p <- read.csv(sprintf("tests/golden/data/%s_persons.csv", prefix))
  dev <- read.csv(sprintf("tests/golden/data/%s_deviation.csv", prefix))
  cl <- read.csv(sprintf("tests/golden/data/%s_clones.csv", prefix))
  dev <- merge(dev, p[, c("id", "age", "sex")], by = "id", sort = FALSE)
  tvf <- if (tv) read.csv(sprintf("tests/golden/data/%s_tv.csv", prefix)) else NULL
  if (tv) dev <- in_force(dev, tvf)
  list(p = p, dev = dev, cl = cl, tv = tvf)
}

# value in force on each person-day: the row of the counting-process frame with start < max(day, 1) <= stop
in_force <- function(days, tvf) {
  last <- tapply(tvf$stop, tvf$id, max)
  days$point <- pmin(pmax(days$day, 1), last[as.character(days$id)])
  days$.row <- seq_len(nrow(days))
  m <- merge(days, tvf, by = "id", suffixes = c("", ".tv"))
  m <- m[m$start < m$point & m$point <= m$stop, ]
  stopifnot(nrow(m) == nrow(days), !anyDuplicated(m$.row))
  m <- m[order(m$.row), ]
  m$start <- NULL; m$stop <- NULL; m$point <- NULL; m$.row <- NULL
  m
}

# labels[1]: strategy requiring the change by g_event ("start"/"stop"); labels[2]: forbidding it until
# g_free ("no_start"/"sustain"); report: order of the curves and of the contrast (first vs second).
one_case <- function(data, formula, g_event, g_free, labels, report, regime = FALSE) {
  p <- data$p; dev <- data$dev; cl <- data$cl
  W <- max(g_event, g_free)
  fit <- glm(formula, family = binomial, data = dev, control = glm.control(epsilon = 1e-12, maxit = 100))
  grid <- expand.grid(day = 0:W, id = p$id)
  grid <- merge(grid, p[, c("id", "age", "sex")], by = "id", sort = FALSE)
  if (!is.null(data$tv)) grid <- in_force(grid, data$tv)
  grid <- grid[order(match(grid$id, p$id), grid$day), ]
  grid$p <- predict(fit, newdata = grid, type = "response")
  grid$s_dev <- ave(1 - grid$p, grid$id, FUN = cumprod)
  key <- paste(grid$id, grid$day)
  s_at <- function(id, day) grid$s_dev[match(paste(id, day), key)]
  w <- ifelse(cl$strategy == labels[2], 1 / s_at(cl$id, cl$start),
              ifelse(cl$start == 0, 1, 1 / (1 - s_at(cl$id, g_event))))
  if (regime) {
    # grace_weights = "regime": the "start" rows rebuilt here person by person, daily while not yet
    # started inside the grace period, with the likelihood ratio of the regime (start day drawn from the
    # natural law given x, conditional on a start by G) to the natural course:
    #   (d-1, d], not started on days 0..d-1: (pi - F(d-1)) / (pi (1 - F(d-1))), F(d) = 1 - S_dev(d), pi = F(G)
    #   (T, end], started on day T <= G: 1 / pi
    rows <- list()
    for (i in seq_len(nrow(p))) {
      id <- p$id[i]
      tt <- if (is.na(p$moud_day[i])) Inf else p$moud_day[i]
      yh <- min(p$days[i], H)
      eh <- if (p$days[i] <= H) p$relapse[i] else 0
      started <- tt <= g_event
      end <- if (started) yh else min(yh, g_event)
      ev <- if (started || yh <= g_event) eh else 0
      pi_g <- 1 - s_at(id, g_event)
      u <- min(tt, end)
      for (d in seq_len(u)) {
        s_prev <- s_at(id, d - 1)
        rows[[length(rows) + 1]] <- data.frame(id = id, strategy = labels[1], start = d - 1, stop = d,
                                               event = if (d == end) ev else 0,
                                               w = (s_prev - (1 - pi_g)) / (pi_g * s_prev))
      }
      if (started && end > tt)
        rows[[length(rows) + 1]] <- data.frame(id = id, strategy = labels[1], start = tt, stop = end,
                                               event = ev, w = 1 / pi_g)
    }
    first <- do.call(rbind, rows)
    second <- cl[cl$strategy == labels[2], ]
    second$w <- w[cl$strategy == labels[2]]
    cl <- rbind(first, second[, names(first)])
    w <- cl$w
    cl$w <- NULL
  }
  d <- cl
  d$w <- w
  d$strategy <- factor(d$strategy, levels = report)
  km <- survfit(Surv(start, stop, event) ~ strategy, data = d, weights = w)
  s1 <- summary(km[1], times = 0:H, extend = TRUE)$surv
  s0 <- summary(km[2], times = 0:H, extend = TRUE)$surv
  # person-days of the clones for the outcome model
  len <- d$stop - d$start
  pd <- d[rep(seq_len(nrow(d)), len), c("strategy", "w")]
  pd$day <- unlist(mapply(function(a, b) seq(a + 1, b), d$start, d$stop, SIMPLIFY = FALSE))
  pd$event <- rep(0, nrow(pd))
  last <- cumsum(len)
  pd$event[last] <- d$event
  pd$is_first <- as.numeric(pd$strategy == report[1])
  pd$t <- pd$day / H
  hr <- glm(event ~ is_first + t + I(t^2), family = quasibinomial, weights = w, data = pd,
            control = glm.control(epsilon = 1e-12, maxit = 100))
  list(
    r_call = sc(paste(deparse(formula), collapse = "")),
    dev_terms = names(coef(fit)), dev_coef = unname(coef(fit)),
    dev_se = unname(sqrt(diag(vcov(fit)))),
    weights = w, surv_first = s1, surv_second = s0,
    risk_first = sc(1 - s1[H + 1]), risk_second = sc(1 - s0[H + 1]),
    risk_difference = sc((1 - s1[H + 1]) - (1 - s0[H + 1])),
    risk_ratio = sc((1 - s1[H + 1]) / (1 - s0[H + 1])),
    log_hr = sc(unname(coef(hr)["is_first"])),
    n_person_days = sc(nrow(pd)), n_events = sc(sum(d$event))
  )
}

ccw <- read_case("ccw")
sus <- read_case("ccw_sustained")
lab <- c("start", "no_start")
res <- list(
  R_version = sc(R.version.string),
  survival_version = sc(as.character(packageVersion("survival"))),
  grace_days = sc(G), horizon_days = sc(H),
  linear = one_case(ccw, started ~ age + sex + day, G, G, lab, lab),
  quadratic = one_case(ccw, started ~ age + sex + day + I(day^2), G, G, lab, lab),
  # sustained_treatment: stop within 14 days vs sustain (no stop) for 30 days; contrast sustain vs stop
  sustained = one_case(sus, started ~ age + sex + day, 14, 30, c("stop", "sustain"), c("sustain", "stop")),
  # time-varying covariates in the deviation (stopping) model
  tv = one_case(read_case("ccw", tv = TRUE), started ~ age + sex + uds_pos + craving + day, G, G, lab, lab),
  sustained_tv = one_case(read_case("ccw_sustained", tv = TRUE), started ~ age + sex + uds_pos + craving + day,
                          14, 30, c("stop", "sustain"), c("sustain", "stop")),
  # grace_weights = "regime": regime likelihood-ratio weights of the "start" clones inside the grace period
  regime = one_case(ccw, started ~ age + sex + day, G, G, lab, lab, regime = TRUE)
)
writeLines(to_json(res), out)

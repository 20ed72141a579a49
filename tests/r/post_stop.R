# Golden values for iop_research.derive.splitting.split_after_exposure (post-MAT-stop window) + Andersen-Gill Cox.
# Call (repo root): Rscript --vanilla tests/r/post_stop.R <datasets_dir> <out_json>
#
# Input: tests/golden/data/post_stop.csv (counting-process rows (start, stop] of opioid episodes,
# written by tests/r/make_post_stop_data.py). A MAT stop on day e is the start of an off row that
# follows an on row of the same episode. Built independently with survival::tmerge:
#   on_mat  = tdc(start, on_mat)                      (the input rows' values)
#   win     = tdc(e, 1), tdc(e + W, 0), W = 28 days   (post-stop window (e, e + W])
#   stopped = tdc(e, 1)                               (has stopped at least once)
#   recent  = win & !on_mat;  past = stopped & !on_mat & !win
# then coxph(Surv(tstart, tstop, ev) ~ on_mat + recent + past + severity_score, cluster = patient_id).
suppressPackageStartupMessages(library(survival))
args <- commandArgs(trailingOnly = TRUE)
out <- args[2]
W <- 28
d <- read.csv("tests/golden/data/post_stop.csv", stringsAsFactors = FALSE)
d <- d[order(match(d$episode_id, unique(d$episode_id)), d$start), ]
last <- d[!duplicated(d$episode_id, fromLast = TRUE), c("episode_id", "patient_id", "stop", "event", "severity_score")]
names(last)[names(last) == "stop"] <- "time"
tm <- tmerge(last[, c("episode_id", "patient_id", "severity_score")], last, id = episode_id, tstop = time)
tm <- tmerge(tm, last, id = episode_id, ev = event(time, event))
tm <- tmerge(tm, d, id = episode_id, on_mat = tdc(start, on_mat), options = list(tdcstart = 0L))
n <- nrow(d)
same <- c(FALSE, d$episode_id[-1] == d$episode_id[-n])
prev_on <- c(0L, d$on_mat[-n])
st <- d[same & prev_on == 1 & d$on_mat == 0, c("episode_id", "start")]
win <- rbind(data.frame(episode_id = st$episode_id, t = st$start, v = 1L),
             data.frame(episode_id = st$episode_id, t = st$start + W, v = 0L))
tm <- tmerge(tm, win, id = episode_id, win = tdc(t, v), options = list(tdcstart = 0L))
st$one <- 1L
tm <- tmerge(tm, st, id = episode_id, stopped = tdc(start, one), options = list(tdcstart = 0L))
tm$recent <- as.integer(tm$win == 1 & tm$on_mat == 0)
tm$past <- as.integer(tm$stopped == 1 & tm$on_mat == 0 & tm$win == 0)
fit <- coxph(Surv(tstart, tstop, ev) ~ on_mat + recent + past + severity_score, data = tm, cluster = patient_id,
             ties = "efron")
jnum <- function(x) paste0("[", paste(formatC(x, digits = 15, format = "g"), collapse = ", "), "]")
pt <- function(v) sum((tm$tstop - tm$tstart)[v == 1])
txt <- paste0("{\n",
              sprintf('  "R_version": "%s",\n', R.version.string),
              sprintf('  "survival": "%s",\n', as.character(packageVersion("survival"))),
              '  "call": "coxph(Surv(tstart, tstop, ev) ~ on_mat + recent + past + severity_score, cluster = patient_id) on tmerge rows, W = 28",\n',
              sprintf('  "window_days": %d,\n', W),
              sprintf('  "n_rows": %d,\n', nrow(tm)),
              sprintf('  "n_events": %d,\n', sum(tm$ev)),
              sprintf('  "days_recent": %s,\n', format(pt(tm$recent), scientific = FALSE)),
              sprintf('  "days_past": %s,\n', format(pt(tm$past), scientific = FALSE)),
              '  "terms": ["on_mat", "recent", "past", "severity_score"],\n',
              sprintf('  "coef": %s,\n', jnum(unname(coef(fit)))),
              sprintf('  "robust_se": %s,\n', jnum(sqrt(diag(fit$var)))),
              sprintf('  "naive_se": %s\n', jnum(sqrt(diag(fit$naive.var)))),
              "}\n")
writeLines(txt, out)

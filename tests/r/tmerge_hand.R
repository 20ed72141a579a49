# Golden rows for iop_research.derive.frames.counting_process_frame on a hand-built case, by survival::tmerge.
# Call (repo root): Rscript --vanilla tests/r/tmerge_hand.R <datasets_dir> <out_json>
#
# Input: tests/golden/data/tmerge_hand_episodes.csv (one row per episode: dates, the first
# qualifying relapse date, first aftercare contact) and tmerge_hand_eras.csv (MAT eras, era_end
# inclusive). Time is days from admission. Conventions (as frames.py):
#   relapse  = event(time, event), time = relapse or observation end - admission
#   in_treatment = tdc(discharge - admit, 0), tdcstart 1 (ongoing: never switched off)
#   on_<class> = tdc(era_start - admit, 1) and tdc(era_end - admit + 1, 0), tdcstart 0
#   on_mat = max over all classes (acamprosate included); aftercare = tdc(first contact - admit, 1)
suppressPackageStartupMessages(library(survival))
args <- commandArgs(trailingOnly = TRUE)
out <- args[2]
ep <- read.csv("tests/golden/data/tmerge_hand_episodes.csv", stringsAsFactors = FALSE, na.strings = "")
er <- read.csv("tests/golden/data/tmerge_hand_eras.csv", stringsAsFactors = FALSE, na.strings = "")
d <- function(x) as.numeric(as.Date(x))
ep$a <- d(ep$admit_date)
ep$event <- as.integer(!is.na(ep$relapse_date))
ep$time <- ifelse(ep$event == 1, d(ep$relapse_date), d(ep$observation_end)) - ep$a
ep$dis <- d(ep$discharge_date) - ep$a
ep$aft <- d(ep$aftercare_date) - ep$a

base <- ep[, c("episode_id", "time", "event")]
tm <- tmerge(base, base, id = episode_id, tstop = time)
tm <- tmerge(tm, base, id = episode_id, relapse = event(time, event))
dis_rows <- ep[!is.na(ep$dis), ]
dis_rows$off <- 0L
tm <- tmerge(tm, dis_rows, id = episode_id, in_treatment = tdc(dis, off), options = list(tdcstart = 1L))
ee <- merge(ep[, c("episode_id", "patient_id", "a")], er, by = "patient_id")
ee$s <- d(ee$era_start) - ee$a
ee$e1 <- d(ee$era_end) - ee$a + 1
classes <- c("buprenorphine", "methadone", "naltrexone", "acamprosate", "disulfiram")
for (cl in classes) {
  x <- ee[ee$medication_class == cl, ]
  nm <- paste0("on_", cl)
  if (nrow(x) == 0) { tm[[nm]] <- 0L; next }
  long <- rbind(data.frame(episode_id = x$episode_id, t = x$s, v = 1L),
                data.frame(episode_id = x$episode_id, t = x$e1, v = 0L))
  args_tm <- list(tm, long, id = quote(episode_id), options = list(tdcstart = 0L))
  args_tm[[nm]] <- quote(tdc(t, v))
  tm <- do.call(tmerge, args_tm)
}
tm$on_mat <- as.integer(pmax(tm$on_buprenorphine, tm$on_methadone, tm$on_naltrexone,
                             tm$on_acamprosate, tm$on_disulfiram) > 0)
aft_rows <- ep[!is.na(ep$aft), ]
aft_rows$on <- 1L
tm <- tmerge(tm, aft_rows, id = episode_id, aftercare = tdc(aft, on), options = list(tdcstart = 0L))
tm <- tm[order(match(tm$episode_id, ep$episode_id), tm$tstart), ]

jnum <- function(x) paste0("[", paste(format(x, scientific = FALSE, trim = TRUE), collapse = ", "), "]")
jstr <- function(x) paste0("[", paste0('"', x, '"', collapse = ", "), "]")
cols <- c("tstart", "tstop", "relapse", "in_treatment", "on_mat", "on_buprenorphine", "on_methadone",
          "on_naltrexone", "aftercare")
body <- c(sprintf('"episode_id": %s', jstr(tm$episode_id)),
          sapply(cols, function(cn) sprintf('"%s": %s', cn, jnum(as.integer(tm[[cn]])))))
txt <- paste0("{\n",
              sprintf('  "R_version": "%s",\n', R.version.string),
              sprintf('  "survival": "%s",\n', as.character(packageVersion("survival"))),
              '  "call": "tmerge(base, base, id = episode_id, tstop = time); tmerge(., relapse = event(time, event)); tdc() per covariate",\n',
              '  "rows": {\n    ', paste(body, collapse = ",\n    "), "\n  }\n}\n")
writeLines(txt, out)

# Golden rows for iop_research.derive.frames.split_at on UIS, by survival::tmerge and survSplit.
# Call (repo root): Rscript --vanilla tests/r/tmerge_uis.R <datasets_dir> <out_json>
#
# (1) In treatment vs after discharge: split each subject's (0, TIME] at LEN.T,
#     tmerge(uis, uis, id = ID, tstop = TIME); tmerge(., relapse = event(TIME, CENSOR),
#     in_treatment = tdc(LEN.T, 0)) with tdcstart = 1 (in treatment until day LEN.T inclusive).
# (2) survSplit(Surv(TIME, CENSOR) ~ ., cut = c(30, 90, 180), episode = "interval").
suppressPackageStartupMessages(library(survival))
args <- commandArgs(trailingOnly = TRUE)
uis <- read.csv(file.path(args[1], "uis.csv"))
out <- args[2]
u <- data.frame(ID = uis$ID, TIME = uis$TIME, CENSOR = uis$CENSOR, LENT = uis$LEN.T, off = 0L)
tm <- tmerge(u[, c("ID", "TIME", "CENSOR", "LENT")], u, id = ID, tstop = TIME)
tm <- tmerge(tm, u, id = ID, relapse = event(TIME, CENSOR))
tm <- tmerge(tm, u, id = ID, in_treatment = tdc(LENT, off), options = list(tdcstart = 1L))
tm <- tm[order(tm$ID, tm$tstart), ]
ss <- survSplit(Surv(TIME, CENSOR) ~ ID, data = u, cut = c(30, 90, 180), episode = "interval")
ss <- ss[order(ss$ID, ss$tstart), ]

jnum <- function(x) paste0("[", paste(format(x, scientific = FALSE, trim = TRUE), collapse = ", "), "]")
obj <- function(df, cols) paste(sapply(cols, function(cn) sprintf('"%s": %s', cn, jnum(as.integer(df[[cn]])))),
                                 collapse = ",\n    ")
txt <- paste0("{\n",
              sprintf('  "R_version": "%s",\n', R.version.string),
              sprintf('  "survival": "%s",\n', as.character(packageVersion("survival"))),
              '  "call_tmerge": "tmerge(u, u, id = ID, tstop = TIME); relapse = event(TIME, CENSOR); in_treatment = tdc(LEN.T, 0), tdcstart = 1",\n',
              '  "call_survsplit": "survSplit(Surv(TIME, CENSOR) ~ ID, data = u, cut = c(30, 90, 180), episode = \\"interval\\")",\n',
              '  "tmerge": {\n    ', obj(tm, c("ID", "tstart", "tstop", "relapse", "in_treatment")), "\n  },\n",
              '  "survsplit": {\n    ', obj(ss, c("ID", "tstart", "TIME", "CENSOR", "interval")), "\n  }\n}\n")
writeLines(txt, out)

# Golden design matrices for iop_research/_design.py (build_design) from R's model.matrix.
#
# Usage (from the repository root):
#   Rscript --vanilla tests/r/design.R <datasets_dir> <out_json>
# Reads tests/golden/data/design.csv (written by tests/r/make_design_data.py); <datasets_dir> is
# unused. Treatment contrasts for every factor (also ordered ones: iop_research codes an ordered
# Categorical against its first level, where R's default for ordered factors is contr.poly).
args <- commandArgs(trailingOnly = TRUE)
out_json <- args[2]
source("tests/r/json.R")
options(contrasts = c("contr.treatment", "contr.treatment"))

d <- read.csv("tests/golden/data/design.csv", stringsAsFactors = FALSE)
d$sex <- factor(d$sex)                                       # levels sorted: f, m
d$program <- factor(d$program)                               # Site A, Site B, Site C
d$severity <- factor(d$severity, levels = c("low", "mid", "high"), ordered = TRUE)
d$psych <- d$psych %in% c("True", "TRUE")                 # pandas writes True/False
stopifnot(is.logical(d$psych), any(d$psych), !all(d$psych))

case <- function(rhs) {
  mm <- model.matrix(as.formula(paste("~", rhs)), data = d)
  mm <- mm[, colnames(mm) != "(Intercept)", drop = FALSE]
  list(r_call = sc(sprintf("model.matrix(~ %s, data = d)", rhs)), colnames = colnames(mm),
       matrix = unname(mm))
}

out <- list(
  R = sc(R.version.string),
  cases = list(
    case("age + sex + psych + program + severity"),
    case("age * sex + factor(site)")
  )
)
writeLines(to_json(out), out_json)

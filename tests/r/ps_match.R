# Golden values for iop_research.designs.ps_match on HELP: greedy nearest-neighbour matching on the
# logit propensity score written out in R (MatchIt is not installed here; this is its documented
# method = "nearest", distance = "glm", link = "linear.logit", m.order = "largest",
# std.caliper = TRUE algorithm: k rounds for ratio k; ties to the first control in the data).
# Call (repo root): Rscript --vanilla tests/r/ps_match.R <datasets_dir> <out_json>
source("tests/r/cr_json.R")
args <- commandArgs(trailingOnly = TRUE)
source("tests/r/help_cc.R")
h <- read_help_cc(args[1])
out <- args[2]
ps <- fitted(glm(treat01 ~ age + female + substance + cesd + homeless01, family = binomial, data = h))
d <- log(ps / (1 - ps))

greedy <- function(ratio, replace, caliper) {
  tr <- which(h$treat01 == 1); co <- which(h$treat01 == 0)
  cal <- if (is.null(caliper)) Inf else caliper * sd(d)
  ord <- tr[order(-ps[tr])]
  avail <- rep(TRUE, length(co))
  m <- setNames(vector("list", length(ord)), as.character(ord))
  for (r in seq_len(ratio)) {
    for (t in ord) {
      key <- as.character(t)
      if (length(m[[key]]) < r - 1) next
      gap <- abs(d[co] - d[t])
      ok <- gap <= cal
      if (!replace) ok <- ok & avail
      ok[match(m[[key]], co)] <- FALSE
      if (!any(ok)) next
      cand <- which(ok)
      j <- cand[which.min(gap[cand])]
      m[[key]] <- c(m[[key]], co[j])
      if (!replace) avail[j] <- FALSE
    }
  }
  tr_rows <- c(); co_rows <- c()
  w <- rep(0, nrow(h))
  for (key in names(m)) {
    cs <- m[[key]]
    if (length(cs) == 0) next
    w[as.integer(key)] <- 1
    for (cc in cs) {
      tr_rows <- c(tr_rows, h$rownames[as.integer(key)]); co_rows <- c(co_rows, h$rownames[cc])
      w[cc] <- w[cc] + 1 / length(cs)
    }
  }
  ctrl <- h$treat01 == 0 & w > 0
  w[ctrl] <- w[ctrl] * sum(ctrl) / sum(w[ctrl])
  list(treated_row = as_array(tr_rows), control_row = as_array(co_rows), weight = as_array(w),
       caliper_logit = cal)
}

write_json(list(
  rownames = as_array(h$rownames),
  nn1 = greedy(1, FALSE, 0.2),
  nn2 = greedy(2, FALSE, 0.2),
  nn1_replace = greedy(1, TRUE, 0.2),
  nn1_nocal = greedy(1, FALSE, NULL)
), out)

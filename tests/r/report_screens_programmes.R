# The models of the screens and programmes study reports, refitted in R on the frames the reports used.
# Usage: Rscript --vanilla tests/r/report_screens_programmes.R <dir with screens.csv, programmes.csv> <out.json>
# screens.csv: episode_id, week, positive, exposure, age, severity_score (the GEE frame of 07_screens)
# programmes.csv: program, y, age, severity_score (the frame of 08_programmes)
suppressPackageStartupMessages({library(geepack); library(lme4); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
s <- read.csv(file.path(args[1], "screens.csv"))
s <- s[order(s$episode_id, s$week), ]
s$id <- as.integer(factor(s$episode_id))
g <- geeglm(positive ~ week + exposure + age + severity_score, id = id, waves = week, data = s,
            family = binomial, corstr = "exchangeable")
cg <- summary(g)$coefficients
p <- read.csv(file.path(args[1], "programmes.csv"))
m <- glmer(y ~ age + severity_score + (1 | program), data = p, family = binomial)
ci <- confint(m, parm = ".sig01", method = "profile", quiet = TRUE)
out <- list(
  gee = list(term = rownames(cg), estimate = unname(cg[, "Estimate"]), std_error = unname(cg[, "Std.err"])),
  glmm = list(term = names(fixef(m)), estimate = unname(fixef(m)), std_error = unname(sqrt(diag(as.matrix(vcov(m))))),
              re_sd = as.data.frame(VarCorr(m))$sdcor[1], re_sd_conf_low = ci[1, 1], re_sd_conf_high = ci[1, 2]),
  R_version = R.version.string, geepack = as.character(packageVersion("geepack")),
  lme4 = as.character(packageVersion("lme4")))
write_json(out, args[2], digits = NA, auto_unbox = TRUE)

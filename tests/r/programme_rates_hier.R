# Golden values for programme_rates(method = "hierarchical"): CMS-style risk-standardised rates written out with
# lme4. Reads tests/golden/data/programmes.csv (tests/programme_sim.py, seed 20261207).
# glmer(completed ~ age + severe + (1 | programme), binomial, Laplace); predicted = sum over the programme's
# patients of plogis(X beta + b_j) (b_j = ranef, the conditional mode), expected = sum of plogis(X beta);
# ratio P/E, rate P/E x mean(completed). (The bootstrap intervals are random and are not compared.)
# Call (repo root): Rscript --vanilla tests/r/programme_rates_hier.R <datasets_dir> <out_json>
suppressPackageStartupMessages(library(lme4))
source("tests/r/json.R")
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv("tests/golden/data/programmes.csv")
gctl <- glmerControl(optimizer = c("bobyqa", "bobyqa"), optCtrl = list(rhobeg = 0.2, rhoend = 1e-12, maxfun = 1e6),
                     tolPwrss = 1e-12, check.conv.grad = "ignore")
fit <- glmer(completed ~ age + severe + (1 | programme), family = binomial, data = d, control = gctl)
eta0 <- as.vector(model.matrix(fit) %*% fixef(fit))
re <- ranef(fit, condVar = TRUE)$programme
b <- re[as.character(d$programme), 1]
progs <- rownames(re)
P <- tapply(plogis(eta0 + b), d$programme, sum)[progs]
E <- tapply(plogis(eta0), d$programme, sum)[progs]
ybar <- mean(d$completed)
writeLines(to_json(list(
  programme = progs, predicted = unname(P), expected = unname(E), ratio = unname(P / E),
  rate = unname(P / E * ybar), random_effect = re[, 1], random_effect_sd = sqrt(attr(re, "postVar")[1, 1, ]),
  coef = unname(fixef(fit)), se = unname(sqrt(diag(as.matrix(vcov(fit))))),
  re_sd = sc(attr(VarCorr(fit)$programme, "stddev")[[1]])
)), args[2])

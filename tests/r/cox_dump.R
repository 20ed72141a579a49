# Helpers of the Cox golden scripts: a coxph fit and a cox.zph test as lists for to_json.
# Usage: source("tests/r/json_arrays.R"); source("tests/r/cox_dump.R").
dump_fit <- function(fit) {
  list(
    names = names(coef(fit)), coef = unname(coef(fit)),
    se = unname(sqrt(diag(fit$var))),
    naive_se = unname(sqrt(diag(if (is.null(fit$naive.var)) fit$var else fit$naive.var))),
    loglik = unname(fit$loglik), score = unname(fit$score), wald = unname(fit$wald.test),
    rscore = if (is.null(fit$rscore)) NA else unname(fit$rscore),
    concordance = unname(fit$concordance["concordance"]),
    concordance_se = unname(fit$concordance["std"]),
    iter = fit$iter, n = fit$n, nevent = fit$nevent,
    var = unname(fit$var)
  )
}
dump_zph <- function(fit, tr) {
  z <- cox.zph(fit, transform = tr)
  list(terms = rownames(z$table), chisq = unname(z$table[, 1]), df = unname(z$table[, 2]),
       p = unname(z$table[, 3]), time = unname(z$time), x = unname(z$x), y = unname(z$y))
}

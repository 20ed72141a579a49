# Golden values for the posterior intervals of programme_rates(method = "hierarchical", interval = "posterior"):
# at fixed SDs theta of the programme intercepts, the joint mode of (beta, v) of
#   f(beta, v) = sum_i [y_i eta_i - log(1 + exp(eta_i))] - |v|^2 / 2,  eta_i = x_i beta + theta v_programme(i)
# and its Laplace log marginal likelihood f(mode) - log det(H) / 2, H = M' W M + diag(0_p, 1_k), M = [X, theta Z]
# (dense, with the programme indicator matrix Z; beta and v integrated out with a flat prior on beta).
# The mode: optim(BFGS) with the analytic gradient, then Newton steps on the dense Hessian.
# Reads tests/golden/data/programmes.csv (tests/programme_sim.py, seed 20261207).
# Call (repo root): Rscript --vanilla tests/r/programme_rates_post.R <datasets_dir> <out_json>
source("tests/r/json.R")
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv("tests/golden/data/programmes.csv")
X <- model.matrix(~ age + severe, data = d)
y <- d$completed
prog <- factor(d$programme)
Z <- model.matrix(~ prog - 1)
p <- ncol(X); k <- ncol(Z)
thetas <- c(0.05, 0.2, 0.4, 0.8, 1.5)
res <- lapply(thetas, function(theta) {
  M <- cbind(X, theta * Z)
  negf <- function(par) {
    eta <- drop(M %*% par); v <- par[-(1:p)]
    -(sum(y * eta - log1p(exp(eta))) - sum(v^2) / 2)
  }
  grad <- function(par) {
    mu <- plogis(drop(M %*% par)); v <- par[-(1:p)]
    -(drop(crossprod(M, y - mu)) - c(rep(0, p), v))
  }
  hess <- function(par) {
    mu <- plogis(drop(M %*% par))
    crossprod(M, M * (mu * (1 - mu))) + diag(c(rep(0, p), rep(1, k)))
  }
  par <- optim(c(coef(glm(y ~ X - 1, family = binomial)), rep(0, k)), negf, grad, method = "BFGS",
               control = list(reltol = 1e-15, maxit = 10000))$par
  for (i in 1:20) par <- par - solve(hess(par), grad(par))
  list(beta = par[1:p], v = par[-(1:p)],
       log_marginal = -negf(par) - as.numeric(determinant(hess(par), logarithm = TRUE)$modulus) / 2)
})
writeLines(to_json(list(
  theta = thetas, programme = levels(prog),
  beta = do.call(rbind, lapply(res, `[[`, "beta")), v = do.call(rbind, lapply(res, `[[`, "v")),
  log_marginal = sapply(res, `[[`, "log_marginal")
)), args[2])

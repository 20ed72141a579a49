# Minimal JSON writer shared by tests/r/cr_*.R and tests/r/causal_*.R (jsonlite is not
# installed everywhere). Numbers are written with 17 significant digits; NA/NaN -> null.
# Usage: source("tests/r/cr_json.R"); write_json(list(a = 1, b = list(c = "x")), path)
to_json <- function(x) {
  if (is.null(x)) return("null")
  if (is.list(x)) {
    nm <- names(x)
    items <- vapply(x, to_json, character(1))
    if (!is.null(nm) && all(nm != "")) {
      return(paste0("{", paste0('"', nm, '": ', items, collapse = ", "), "}"))
    }
    return(paste0("[", paste(items, collapse = ", "), "]"))
  }
  if (is.factor(x)) x <- as.character(x)
  if (is.character(x)) {
    v <- ifelse(is.na(x), "null", paste0('"', gsub('"', '\\\\"', x), '"'))
  } else if (is.logical(x)) {
    v <- ifelse(is.na(x), "null", ifelse(x, "true", "false"))
  } else {
    v <- ifelse(is.finite(x), formatC(as.numeric(x), digits = 17, format = "g"), "null")
  }
  if (length(v) == 1 && is.null(attr(x, "as_array"))) return(v)
  paste0("[", paste(v, collapse = ", "), "]")
}
as_array <- function(x) { attr(x, "as_array") <- TRUE; x }
write_json <- function(x, path) {
  x$R_version <- R.version.string
  x$survival_version <- as.character(packageVersion("survival"))
  x$cmprsk_version <- as.character(packageVersion("cmprsk"))
  writeLines(to_json(x), path)
}

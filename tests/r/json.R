# JSON writer shared by the golden-value scripts (jsonlite is not installed everywhere).
# NA -> null, NaN -> NaN, Inf -> Infinity (Python's json reads these); a vector is an array
# unless wrapped in sc(), which writes a scalar. Usage: source("tests/r/json.R").
to_json <- function(x) {
  if (is.null(x)) return("null")
  if (is.list(x)) {
    items <- vapply(x, to_json, "")
    nm <- names(x)
    if (!is.null(nm)) return(paste0("{", paste0("\"", nm, "\":", items, collapse = ","), "}"))
    return(paste0("[", paste(items, collapse = ","), "]"))
  }
  if (is.matrix(x)) return(to_json(lapply(seq_len(nrow(x)), function(i) as.vector(x[i, ]))))
  scalar <- inherits(x, "scalar")
  x <- unclass(x)
  if (is.factor(x)) x <- as.character(x)
  if (is.character(x)) {
    v <- ifelse(is.na(x), "null", paste0("\"", gsub("\"", "\\\\\"", x), "\""))
  } else if (is.logical(x)) {
    v <- ifelse(is.na(x), "null", ifelse(x, "true", "false"))
  } else {
    x <- as.numeric(x)
    v <- ifelse(is.nan(x), "NaN", ifelse(is.na(x), "null",
         ifelse(is.infinite(x), ifelse(x > 0, "Infinity", "-Infinity"), sprintf("%.17g", x))))
  }
  if (scalar) return(v[1])
  paste0("[", paste(v, collapse = ","), "]")
}
sc <- function(x) structure(x, class = "scalar")

# JSON writer of the Cox golden scripts: every vector (also of length 1) is an array, NA -> null.
# Usage: source("tests/r/json_arrays.R").
to_json <- function(x) {
  if (is.null(x)) return("null")
  if (is.list(x)) {
    nm <- names(x)
    items <- vapply(seq_along(x), function(i) to_json(x[[i]]), "")
    if (is.null(nm)) return(paste0("[", paste(items, collapse = ","), "]"))
    return(paste0("{", paste0("\"", nm, "\":", items, collapse = ","), "}"))
  }
  if (is.matrix(x)) return(to_json(lapply(seq_len(nrow(x)), function(i) unname(x[i, ]))))
  if (is.character(x)) v <- paste0("\"", x, "\"")
  else if (is.logical(x)) v <- ifelse(is.na(x), "null", ifelse(x, "true", "false"))
  else v <- ifelse(is.na(x), "null", sprintf("%.17g", as.numeric(x)))
  paste0("[", paste(v, collapse = ","), "]")
}

# The HELP analysis sample shared by causal_help.R, iptw_cox.R and ps_match.R (mirrored by the help_cc
# fixture in tests/conftest.py): rows with non-missing daysanysub and anysubstatus; treat01 = (treat ==
# "yes"); homeless01 = (homeless == "homeless"). Usage: h <- read_help_cc(datasets_dir)
read_help_cc <- function(datasets_dir) {
  h <- read.csv(file.path(datasets_dir, "helprct.csv"))
  h <- h[!is.na(h$daysanysub) & !is.na(h$anysubstatus), ]
  h$treat01 <- as.numeric(h$treat == "yes")
  h$homeless01 <- as.numeric(h$homeless == "homeless")
  h
}

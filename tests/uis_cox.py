"""UIS as the Cox tests use it (test_cox, test_predict, test_residuals), matching the R scripts
``cox_real.R``, ``predict_cox.R`` and ``resid_cox.R``."""
from __future__ import annotations

import pandas as pd

#: the UIS covariates of the R scripts (IVf = factor(IV))
UIS_COV = ["TREAT", "SITE", "AGE", "NDT", "IVf", "RACE", "BECK"]


def read_uis(path) -> pd.DataFrame:
    """UIS with the derived columns of the R scripts: IV as a factor, integer and fractional
    case weights, 40 clusters."""
    df = pd.read_csv(path)
    df["IVf"] = df["IV"].astype(str)  # IV as a factor, reference level "1" as R's factor(IV)
    df["w_int"] = 1 + (df["ID"] % 3)
    df["w_frac"] = 0.5 + (df["ID"] % 4) / 4
    df["cl"] = df["ID"] % 40
    return df


def split_at_los(uis: pd.DataFrame) -> pd.DataFrame:
    """Each UIS subject split at LEN.T into in-treatment and after-treatment ``(start, stop]`` rows,
    rows in the order the R scripts build them (all first pieces, then the second pieces)."""
    a = uis[uis["LEN.T"] < uis["TIME"]]
    b = uis[uis["LEN.T"] >= uis["TIME"]]
    return pd.concat(
        [
            a.assign(start=0, stop=a["LEN.T"], event=0, intreat=1),
            a.assign(start=a["LEN.T"], stop=a["TIME"], event=a["CENSOR"], intreat=0),
            b.assign(start=0, stop=b["TIME"], event=b["CENSOR"], intreat=1),
        ],
        ignore_index=True,
    )

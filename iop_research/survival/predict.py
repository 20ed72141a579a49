"""Prediction from fitted models: baseline hazard, survival curves, risk scores, CIFs.

Equal to R ``survival`` 3.5 (``basehaz``, ``survfit.coxph``, ``predict.coxph``) and
``cmprsk`` (``predict.crr``); tested live against R in ``tests/test_predict.py``.

The public names are re-exported from :mod:`iop_research.survival`.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from iop_research.exceptions import ModelSpecificationError, format_ids
from iop_research.results import Result
from iop_research.survival._riskset import RiskSets, design_for_newdata, strata_for_newdata
from iop_research.survival.cox import CoxModel

__all__ = ["baseline_hazard", "predict_survival", "predict_risk", "predict_cif"]

#: Columns of :func:`predict_survival` (``stratum`` only for stratified fits).
PREDICT_SURVIVAL_COLUMNS = ("row", "stratum", "time", "survival", "std_error", "conf_low", "conf_high", "cumhaz")
#: Columns of :func:`baseline_hazard` (``stratum`` only for stratified fits).
BASELINE_HAZARD_COLUMNS = ("stratum", "time", "n_events", "hazard", "cumhaz")
#: Columns of :func:`predict_risk`.
PREDICT_RISK_COLUMNS = ("row", "estimate", "std_error")
#: Columns of :func:`predict_cif`.
PREDICT_CIF_COLUMNS = ("row", "time", "cif")

_TYPES = ("lp", "risk", "expected")
_REFERENCES = ("strata", "sample", "zero")


def _cox_model(fit: Any, where: str) -> CoxModel:
    model = getattr(fit, "model", fit)
    if not isinstance(model, CoxModel):
        raise ModelSpecificationError(f"{where} needs the result of fit_cox(...), got {type(fit).__name__}.")
    if not model.spec:
        raise ModelSpecificationError(
            f"{where}: this CoxModel carries no design spec (made by an older fit_cox?). Refit with fit_cox."
        )
    return model


def _stratum_label(model: CoxModel, code: int) -> Any:
    labels = model.spec.get("strata_levels") or []
    lab = labels[code] if code < len(labels) else code
    return lab if not isinstance(lab, tuple) else "/".join(str(v) for v in lab)


def _check_times(times, where: str) -> np.ndarray:
    t = np.atleast_1d(np.asarray(times, dtype=float))
    if t.ndim != 1 or t.size == 0 or not np.isfinite(t).all() or (t < 0).any():
        raise ModelSpecificationError(f"{where}: times must be a non-empty list of finite numbers >= 0, got {times!r}.")
    return t


def baseline_hazard(fit: Any, *, centered: bool = True) -> pd.DataFrame:
    """Baseline (cumulative) hazard of a Cox model, per stratum, as R ``basehaz``.

    Parameters
    ----------
    fit : Result
        Output of :func:`~iop_research.survival.cox.fit_cox`.
    centered : bool, default True
        True: the hazard of a subject at R's centring ``fit$means`` (weighted covariate
        means, except 0 for columns with values in {-1, 0, 1}: survival 3.x does not centre
        indicators), as ``basehaz(fit, centered=TRUE)``. False: covariates 0.

    Returns
    -------
    pandas.DataFrame
        One row per distinct event time per stratum: ``stratum`` (only for stratified fits),
        ``time``, ``n_events`` (weighted), ``hazard`` (increment), ``cumhaz``.

    Notes
    -----
    Ties as the fit: with Efron the increment at a time with ``d`` tied events is
    ``(e/d) sum_k 1 / (S0 - (k/d) S0_events)`` (R's ``survfit.coxph`` ``ctype=2`` for Efron
    fits); with Breslow ``e / S0``. R's ``basehaz`` also lists censoring times (with zero
    increment); here only event times are listed. Counting-process fits use the risk
    sets ``start < t <= stop``.

    References
    ----------
    .. [1] Therneau, T. M. & Grambsch, P. M. (2000). Modeling Survival Data, sec. 10.2.
       R package ``survival`` 3.5, ``agsurv``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from iop_research.survival.cox import fit_cox
    >>> df = pd.DataFrame({"days": [5, 8, 8, 12, 20, 25], "relapse": [1, 1, 0, 1, 0, 1],
    ...                    "mat": [0, 1, 0, 1, 1, 0]})
    >>> bh = baseline_hazard(fit_cox(df, duration_col="days", event_col="relapse", covariates=["mat"]))
    >>> bh["time"].tolist()
    [5.0, 8.0, 12.0, 25.0]
    """
    model = _cox_model(fit, "baseline_hazard")
    rs = RiskSets(model)
    shift = 1.0 if centered else float(np.exp(-rs.means @ rs.beta))
    parts = []
    for s in range(rs.n_strata()):
        c = rs.stratum_curve(s)
        if c["time"].size == 0:
            continue
        part = pd.DataFrame(
            {
                "stratum": _stratum_label(model, s),
                "time": c["time"],
                "n_events": c["nevent"],
                "hazard": c["hazard"] * shift,
                "cumhaz": c["cumhaz"] * shift,
            }
        )
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    if not model.spec.get("strata_cols"):
        out = out.drop(columns="stratum")
    return out


def predict_survival(
    fit: Any,
    newdata: pd.DataFrame,
    *,
    times: Sequence[float] | None = None,
    conf_level: float = 0.95,
) -> pd.DataFrame:
    """Predicted survival curves for new covariate profiles, as R ``survfit(coxph_fit, newdata)``.

    Parameters
    ----------
    fit : Result
        Output of :func:`~iop_research.survival.cox.fit_cox` (right-censored or
        counting-process; covariate list or formula; strata allowed).
    newdata : pandas.DataFrame
        One row per profile with every model covariate (categorical levels as in the fit).
        With a stratified fit, a row that has the strata column(s) is predicted in its
        stratum; without them every row gets a curve in every stratum (as R).
    times : sequence of float, optional
        Times at which to report S(t). Default: every distinct follow-up time of the fit's
        stratum (R's ``survfit`` grid, event and censoring times). After the last event
        time the curve stays at its last value (R ``summary(..., extend=TRUE)``).
    conf_level : float, default 0.95
        Level of the pointwise interval.

    Returns
    -------
    pandas.DataFrame
        ``row`` (position in ``newdata``, 0-based), ``stratum`` (stratified fits only),
        ``time``, ``survival``, ``std_error`` (of S(t), R's ``summary(sf)$std.err``),
        ``conf_low``, ``conf_high``, ``cumhaz``.

    Notes
    -----
    ``S(t | z) = exp(-H0(t) exp(z' beta))`` with H0 as :func:`baseline_hazard` (Efron- or
    Breslow-adjusted as the fit; R ``survfit.coxph`` ``stype=2``). The variance of the
    cumulative hazard is Tsiatis' (1981): ``exp(2 z'b) [sum dN/S0^2 + q(t)' V q(t)]``,
    ``q(t) = H0(t) z - int xbar dH0``, with ``V`` the fit's reported variance (robust when
    the fit is robust, as R uses ``fit$var``). Interval: ``conf.type="log"`` (R's
    default), ``exp(log S +/- z se(H))``, upper limit capped at 1.

    Raises
    ------
    ModelSpecificationError
        ``fit`` is not a Cox fit; newdata lacks covariates, has missing values or unseen
        levels or strata; bad ``times`` or ``conf_level``.

    References
    ----------
    .. [1] Tsiatis, A. A. (1981). A large sample study of Cox's regression model. Ann.
       Statist. 9(1), 93-108.
    .. [2] R package ``survival`` 3.5: ``survfit.coxph``, ``agsurv``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from iop_research.survival.cox import fit_cox
    >>> rng = np.random.default_rng(4)
    >>> df = pd.DataFrame({"mat": rng.integers(0, 2, 200), "age": rng.normal(35, 8, 200)})
    >>> t = rng.exponential(90 * np.exp(0.6 * df["mat"]))
    >>> df["days"] = np.ceil(np.minimum(t, 180)); df["relapse"] = (t < 180).astype(int)
    >>> fit = fit_cox(df, duration_col="days", event_col="relapse", covariates=["mat", "age"])
    >>> prof = pd.DataFrame({"mat": [0, 1], "age": [30, 30]})
    >>> pred = predict_survival(fit, prof, times=[90])
    >>> bool(pred["survival"].iloc[1] > pred["survival"].iloc[0])
    True
    """
    where = "predict_survival"
    model = _cox_model(fit, where)
    if not (0 < conf_level < 1):
        raise ModelSpecificationError(f"{where}: conf_level={conf_level!r} must lie strictly between 0 and 1.")
    req = None if times is None else _check_times(times, where)
    rs = RiskSets(model)
    x2 = design_for_newdata(model.spec, model.columns, newdata, where) - rs.means
    risk2 = np.exp(x2 @ rs.beta)
    codes = strata_for_newdata(model.spec, newdata, where)
    nstrat = rs.n_strata()
    var = np.asarray(model.var, dtype=float)
    z = stats.norm.ppf(0.5 + conf_level / 2)
    parts = []
    pairs = (
        [(i, int(codes[i])) for i in range(len(newdata))]
        if codes is not None
        else [(i, s) for i in range(len(newdata)) for s in range(nstrat)]
    )
    curves = {s: rs.stratum_curve(s) for s in range(nstrat)}
    for i, s in pairs:
        c = curves[s]
        tt = req if req is not None else np.unique(rs.stop[rs.strata == s])
        pos = np.searchsorted(c["time"], tt, side="right") - 1
        has = pos >= 0
        pk = np.where(has, pos, 0)
        H0 = np.where(has, c["cumhaz"][pk], 0.0) if c["time"].size else np.zeros(len(tt))
        V0 = np.where(has, c["cumvar"][pk], 0.0) if c["time"].size else np.zeros(len(tt))
        XB = c["cumxbar"][pk] * has[:, None] if c["time"].size else np.zeros((len(tt), len(rs.beta)))
        dt = H0[:, None] * x2[i] - XB
        se_h = np.sqrt(V0 + np.einsum("ij,jk,ik->i", dt, var, dt)) * risk2[i]
        H = H0 * risk2[i]
        surv = np.exp(-H)
        with np.errstate(divide="ignore", over="ignore"):
            lo = np.exp(-H - z * se_h)
            hi = np.minimum(np.exp(-H + z * se_h), 1.0)
        parts.append(
            pd.DataFrame(
                {
                    "row": i,
                    "stratum": _stratum_label(model, s),
                    "time": tt,
                    "survival": surv,
                    "std_error": surv * se_h,
                    "conf_low": lo,
                    "conf_high": hi,
                    "cumhaz": H,
                }
            )
        )
    out = pd.concat(parts, ignore_index=True)
    if not model.spec.get("strata_cols"):
        out = out.drop(columns="stratum")
    return out


def predict_risk(
    fit: Any,
    newdata: pd.DataFrame | None = None,
    *,
    type: str = "lp",
    reference: str = "strata",
) -> pd.DataFrame:
    """Linear predictor, relative risk or expected number of events, as R ``predict.coxph``.

    Parameters
    ----------
    fit : Result
        Output of :func:`~iop_research.survival.cox.fit_cox`.
    newdata : pandas.DataFrame, optional
        Rows to predict; default the rows of the fit. ``type="expected"`` needs the
        fit's time and event columns (``duration_col``, or ``start_col``/``stop_col``).
    type : {"lp", "risk", "expected"}, default "lp"
        ``lp``: ``(x - c)' beta``; ``risk``: ``exp(lp)``; ``expected``: ``H0(t) exp(lp)``, the
        expected number of events over each row's follow-up (for the fit's own rows it is
        ``event - martingale residual``, Efron-adjusted at the row's own event time, as R).
    reference : {"strata", "sample", "zero"}, default "strata"
        Centring ``c`` of ``lp``/``risk``, as R 3.x: ``"strata"`` the (weighted) covariate
        means of the row's stratum for stratified fits, else the overall means
        ``fit$means`` (R's default, so ``lp`` of a profile equal to the means is 0);
        ``"sample"`` the overall means; ``"zero"`` no centring (``x' beta``).

    Returns
    -------
    pandas.DataFrame
        ``row`` (0-based position), ``estimate``, ``std_error`` (R ``se.fit``: for ``lp``
        ``sqrt(x' V x)`` with centred x; for ``risk`` R's ``se * sqrt(risk)``; for
        ``expected`` on right-censored data Tsiatis' standard error; NaN for
        counting-process ``expected``, where R's formula is not a standard error).

    Raises
    ------
    ModelSpecificationError
        Unknown ``type``/``reference``; newdata problems as :func:`predict_survival`;
        ``type="expected"`` without the time columns, or without strata columns in a
        stratified fit.

    References
    ----------
    .. [1] R package ``survival`` 3.5: ``predict.coxph``.

    Examples
    --------
    >>> import pandas as pd
    >>> from iop_research.survival.cox import fit_cox
    >>> df = pd.DataFrame({"days": [5, 8, 9, 12, 20, 25, 30, 31], "relapse": [1, 1, 0, 1, 0, 1, 1, 0],
    ...                    "age": [30, 41, 25, 52, 38, 29, 47, 33]})
    >>> fit = fit_cox(df, duration_col="days", event_col="relapse", covariates=["age"])
    >>> round(float(predict_risk(fit, pd.DataFrame({"age": [df["age"].mean()]}))["estimate"].iloc[0]), 12)
    0.0
    """
    where = "predict_risk"
    model = _cox_model(fit, where)
    if type not in _TYPES:
        raise ModelSpecificationError(f"{where}: type={type!r} is not supported; use one of {', '.join(_TYPES)}.")
    if reference not in _REFERENCES:
        raise ModelSpecificationError(
            f"{where}: reference={reference!r} is not supported; use one of {', '.join(_REFERENCES)}."
        )
    rs = RiskSets(model)
    beta = rs.beta
    var = np.asarray(model.var, dtype=float)
    d = model.data
    means = rs.means
    stratified = bool(model.spec.get("strata_cols"))
    if newdata is None:
        xraw = np.asarray(d["x"], dtype=float)
        codes = rs.strata
    else:
        xraw = design_for_newdata(model.spec, model.columns, newdata, where)
        codes = strata_for_newdata(model.spec, newdata, where)
        if codes is None:
            if stratified and (type == "expected" or reference == "strata"):
                raise ModelSpecificationError(
                    f"{where}: newdata lacks the strata column(s) {format_ids(model.spec['strata_cols'])}; "
                    "add them (or use reference='sample' for lp/risk)."
                )
            codes = np.zeros(len(newdata), dtype=np.int64)
    n2 = len(xraw)
    if type in ("lp", "risk"):
        if reference == "zero":
            xc = xraw
        elif reference == "strata" and stratified:
            w = np.asarray(d["weights"], dtype=float)
            xs = np.asarray(d["x"], dtype=float)
            ns = rs.n_strata()
            smeans = np.vstack(
                [np.average(xs[rs.strata == s], axis=0, weights=w[rs.strata == s]) for s in range(ns)]
            )
            xc = xraw - smeans[codes]
        else:
            xc = xraw - means
        est = xc @ beta
        se = np.sqrt(np.einsum("ij,jk,ik->i", xc, var, xc))
        if type == "risk":
            est = np.exp(est)
            se = se * np.sqrt(est)
        return pd.DataFrame({"row": np.arange(n2), "estimate": est, "std_error": se})
    # expected
    xc = xraw - means
    risk = np.exp(xc @ beta)
    counting = bool(d["is_counting"])
    if newdata is None:
        est = d["event"].astype(float) - rs.martingale()
        t_stop = rs.stop
        t_start = rs.start
    else:
        spec = model.spec
        tcols = [spec["start_col"], spec["stop_col"]] if counting else [spec["duration_col"]]
        miss = [c for c in tcols if c not in newdata.columns]
        if miss:
            raise ModelSpecificationError(
                f"{where}: type='expected' needs the time column(s) {format_ids(miss)} in newdata."
            )
        t_stop = newdata[tcols[-1]].to_numpy(dtype=float)
        t_start = newdata[tcols[0]].to_numpy(dtype=float) if counting else np.full(n2, -np.inf)
        est = None
    se = np.full(n2, np.nan)
    pred = np.zeros(n2)
    for s in np.unique(codes):
        c = rs.stratum_curve(int(s))
        rows = np.flatnonzero(codes == s)
        pos = np.searchsorted(c["time"], t_stop[rows], side="right") - 1
        has = pos >= 0
        pk = np.where(has, pos, 0)
        H = np.where(has, c["cumhaz"][pk], 0.0)
        if counting:
            pos0 = np.searchsorted(c["time"], t_start[rows], side="right") - 1
            H = H - np.where(pos0 >= 0, c["cumhaz"][np.maximum(pos0, 0)], 0.0)
        else:
            V0 = np.where(has, c["cumvar"][pk], 0.0)
            XB = c["cumxbar"][pk] * has[:, None]
            dt = H[:, None] * xc[rows] - XB
            se[rows] = np.sqrt(V0 + np.einsum("ij,jk,ik->i", dt, var, dt)) * risk[rows]
        pred[rows] = H * risk[rows]
    if est is None:
        est = pred
    return pd.DataFrame({"row": np.arange(n2), "estimate": est, "std_error": se})


def predict_cif(fit: Result, newdata: pd.DataFrame, *, times: Sequence[float] | None = None) -> pd.DataFrame:
    """Predicted cumulative incidence from a Fine-Gray fit, as ``cmprsk::predict.crr``.

    Parameters
    ----------
    fit : Result
        Output of :func:`~iop_research.survival.competing.fit_fine_gray`.
    newdata : pandas.DataFrame
        One row per profile with the model's covariates (levels as in the fit).
    times : sequence of float, optional
        Report times; default the distinct failure times of the cause (``predict.crr``'s
        grid). Between failure times the CIF is constant; before the first it is 0.

    Returns
    -------
    pandas.DataFrame
        ``row`` (0-based), ``time``, ``cif``.

    Notes
    -----
    ``F(t | z) = 1 - exp(-exp(z' beta) sum_{u <= t} dLambda0(u))`` with Breslow increments
    ``dLambda0 = d / sum_risk w exp(z' beta)`` at the fitted beta (crr's ``bfitj``);
    covariates are not centred (as ``crr``).

    References
    ----------
    .. [1] Fine, J. P. & Gray, R. J. (1999). JASA 94(446), 496-509. R package ``cmprsk``,
       ``predict.crr``.
    """
    where = "predict_cif"
    model = getattr(fit, "model", None)
    if not isinstance(model, dict) or "bfitj" not in model:
        raise ModelSpecificationError(f"{where} needs the result of fit_fine_gray(...).")
    spec = {"covariates": model["covariates"], "levels": model.get("levels", {}),
            "model_spec": model.get("model_spec"), "formula": model.get("formula")}
    x = design_for_newdata(spec, model["terms"], newdata, where)
    lp = x @ np.asarray(model["coef"], dtype=float)
    uft = np.asarray(model["uftime"], dtype=float)
    cum = np.cumsum(model["bfitj"])
    tt = uft if times is None else _check_times(times, where)
    pos = np.searchsorted(uft, tt, side="right") - 1
    L = np.where(pos >= 0, cum[np.maximum(pos, 0)], 0.0)
    parts = [
        pd.DataFrame({"row": i, "time": tt, "cif": 1 - np.exp(-np.exp(lp[i]) * L)}) for i in range(len(newdata))
    ]
    return pd.concat(parts, ignore_index=True)

"""Risk-set quantities of a fitted Cox model, shared by prediction and residuals.

Internal to :mod:`iop_research.survival` (used by :mod:`.predict` and :mod:`.residuals`).
Everything is computed from the arrays a :class:`~iop_research.survival.cox.CoxModel`
keeps (``model.data``) at the fitted coefficients, following R ``survival`` 3.5:
``agsurv`` (baseline hazard, its variance and the ``xbar`` term of ``survfit.coxph``),
``agmart3``/``coxmart2`` (martingale residuals), ``agscore2``/``coxscore2`` (score
residuals) and ``coxscho`` (Schoenfeld residuals).

Notation: rows ``j`` with weight ``w_j``, centred covariates ``x_j`` (``x - means``),
risk score ``r_j = exp(x_j' beta)``. For the distinct event times ``g`` of a stratum,
with ``d_g`` tied events of total weight ``e_g``, Efron's approximation splits the
event time into slots ``k = 0..d_g-1`` with denominators
``D_gk = sum_{at risk} w r - (k/d) sum_{events} w r`` and increments
``h_gk = (e_g / d_g) / D_gk`` (Breslow: one slot with ``k = 0``).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from iop_research._design import term_name
from iop_research.exceptions import ModelSpecificationError, format_ids

__all__ = ["RiskSets", "r_means", "design_for_newdata", "strata_for_newdata"]


def r_means(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Centring of R ``coxph`` (``fit$means``): weighted column means, but 0 for columns whose
    values all lie in {-1, 0, 1} (``coxph(nocenter = c(-1, 0, 1))``, survival >= 3.0)."""
    m = np.average(x, axis=0, weights=w) if len(x) else np.zeros(x.shape[1])
    zero_one = np.isin(x, (-1.0, 0.0, 1.0)).all(axis=0)
    return np.where(zero_one, 0.0, m)


class RiskSets:
    """Event-time sums of a fitted Cox model (all strata on one integer axis).

    Attributes (per event group ``g``, groups sorted by stratum then time)
    ------------------------------------------------------------------
    g_stratum, g_time, g_nevent (weighted), g_count (unweighted), g_nrisk (weighted sum of
    w r), g_hazard (``sum_k h``), g_varhaz (``sum_k h / D``), g_xbar_h (``sum_k h xbar_k``,
    R agsurv's xbar increment), g_f (``sum_k (k/d) h``), g_fx (``sum_k (k/d) h xbar_k``),
    g_m3 (mean of ``xbar_k`` over slots, the Schoenfeld centre); per row ``a`` and ``b``:
    the row is at risk at groups ``b <= g < a``.
    """

    def __init__(self, model: Any):
        d = model.data
        self.start = np.asarray(d["start"], dtype=float)
        self.stop = np.asarray(d["stop"], dtype=float)
        self.event = np.asarray(d["event"], dtype=bool)
        self.w = np.asarray(d["weights"], dtype=float)
        self.strata = np.asarray(d["strata"], dtype=np.int64)
        self.means = r_means(np.asarray(d["x"], dtype=float), self.w)
        self.x = np.asarray(d["x"], dtype=float) - self.means
        self.beta = model.coefficients.to_numpy(dtype=float)
        self.efron = model.ties == "efron"
        self.is_counting = bool(d["is_counting"])
        self.eta = self.x @ self.beta
        self.r = np.exp(self.eta)
        self._build()

    def _build(self) -> None:
        n, p = self.x.shape
        ev = np.flatnonzero(self.event)
        et = np.unique(self.stop[ev])
        band = len(et) + 2
        skey = np.searchsorted(et, self.stop, side="right").astype(np.int64) + self.strata * band
        if np.isfinite(self.start).all():
            bkey = np.searchsorted(et, self.start, side="right").astype(np.int64) + self.strata * band
        else:
            bkey = self.strata * band
        gkeys, ginv = np.unique(skey[ev], return_inverse=True)
        ginv = ginv.ravel()
        G = len(gkeys)
        self.G = G
        self.ev = ev
        self.ev_group = ginv
        self.a = np.searchsorted(gkeys, skey, side="right")
        self.b = np.searchsorted(gkeys, bkey, side="right")
        self.g_stratum = gkeys // band
        self.g_time = et[(gkeys % band) - 1]
        wr = self.w * self.r

        def risk_sum(v: np.ndarray) -> np.ndarray:
            add = np.bincount(self.b, weights=v, minlength=G + 1)
            sub = np.bincount(self.a, weights=v, minlength=G + 1)
            return np.cumsum(add - sub)[:G]

        nrisk = risk_sum(wr)
        xsum = np.column_stack([risk_sum(wr * self.x[:, k]) for k in range(p)]) if p else np.zeros((G, 0))
        wev = self.w[ev]
        count = np.bincount(ginv, minlength=G).astype(float)
        nevent = np.bincount(ginv, weights=wev, minlength=G)
        erisk = np.bincount(ginv, weights=wr[ev], minlength=G)
        xsum2 = np.column_stack([np.bincount(ginv, weights=wr[ev] * self.x[ev, k], minlength=G) for k in range(p)])
        if self.efron:
            slot_g = np.repeat(np.arange(G), count.astype(np.int64))
            first = np.concatenate([[0], np.cumsum(count.astype(np.int64))[:-1]])
            frac = (np.arange(len(slot_g)) - first[slot_g]) / count[slot_g]
        else:
            slot_g = np.arange(G)
            frac = np.zeros(G)
        denom = nrisk[slot_g] - frac * erisk[slot_g]
        xb = (xsum[slot_g] - frac[:, None] * xsum2[slot_g]) / denom[:, None]
        nslot = np.bincount(slot_g, minlength=G).astype(float)
        h = (nevent[slot_g] / nslot[slot_g]) / denom

        def per_group(v: np.ndarray) -> np.ndarray:
            return np.bincount(slot_g, weights=v, minlength=G)

        self.g_count = count
        self.g_nevent = nevent
        self.g_nrisk = nrisk
        self.g_hazard = per_group(h)
        self.g_varhaz = per_group(h / denom)
        self.g_f = per_group(frac * h)
        self.g_xbar_h = np.column_stack([per_group(h * xb[:, k]) for k in range(p)])
        self.g_fx = np.column_stack([per_group(frac * h * xb[:, k]) for k in range(p)])
        self.g_m3 = np.column_stack([per_group(xb[:, k]) for k in range(p)]) / nslot[:, None]

    # ------------------------------------------------------------------ per-row sums
    def _interval_sum(self, v: np.ndarray) -> np.ndarray:
        """sum over each row's at-risk groups (b <= g < a) of v (G or G x p)."""
        cs = np.concatenate([np.zeros((1,) + v.shape[1:]), np.cumsum(v, axis=0)])
        return cs[self.a] - cs[self.b]

    def martingale(self) -> np.ndarray:
        """Unweighted martingale residuals (R ``residuals(fit, "martingale")``)."""
        cumh = self._interval_sum(self.g_hazard)
        own = np.zeros(len(self.stop))
        own[self.ev] = self.g_f[self.ev_group]
        return self.event.astype(float) - self.r * (cumh - own)

    def score(self) -> np.ndarray:
        """Unweighted score residuals, n x p (R ``residuals(fit, "score")``)."""
        hs = self._interval_sum(self.g_hazard)
        hx = self._interval_sum(self.g_xbar_h)
        res = -self.r[:, None] * (self.x * hs[:, None] - hx)
        ev, ge = self.ev, self.ev_group
        res[ev] += (self.x[ev] - self.g_m3[ge]) + self.r[ev, None] * (
            self.x[ev] * self.g_f[ge][:, None] - self.g_fx[ge]
        )
        return res

    def schoenfeld(self) -> np.ndarray:
        """Schoenfeld residuals of the event rows (in ``self.ev`` order), unweighted."""
        return self.x[self.ev] - self.g_m3[self.ev_group]

    # ------------------------------------------------------------------ curves
    def stratum_curve(self, s: int) -> dict[str, np.ndarray]:
        """Cumulative sums over the event times of stratum ``s``."""
        sel = self.g_stratum == s
        return dict(
            time=self.g_time[sel],
            hazard=self.g_hazard[sel],
            cumhaz=np.cumsum(self.g_hazard[sel]),
            cumvar=np.cumsum(self.g_varhaz[sel]),
            cumxbar=np.cumsum(self.g_xbar_h[sel], axis=0),
            nevent=self.g_nevent[sel],
        )

    def n_strata(self) -> int:
        return int(self.strata.max()) + 1 if len(self.strata) else 1


def _levels_match(values: pd.Series, level: Any) -> np.ndarray:
    return (values == level).to_numpy(dtype=bool, na_value=False)


def design_for_newdata(spec: dict, columns: Sequence[str], newdata: pd.DataFrame, where: str) -> np.ndarray:
    """The fit's design matrix (uncentred) for ``newdata``, same column order as the fit.

    ``spec`` has ``covariates`` + ``levels`` (covariate fits) or ``model_spec`` (formula fits).
    Raises ModelSpecificationError for missing columns, missing values or unseen levels.
    """
    if not isinstance(newdata, pd.DataFrame):
        raise ModelSpecificationError(f"{where}: newdata must be a pandas DataFrame, got {type(newdata).__name__}.")
    if len(newdata) == 0:
        raise ModelSpecificationError(f"{where}: newdata has no rows.")
    columns = list(columns)
    if spec.get("model_spec") is not None:
        ms = spec["model_spec"]
        used = sorted(ms.variables_by_source.get("data", set()))
        missing = [c for c in used if c not in newdata.columns]
        if missing:
            raise ModelSpecificationError(
                f"{where}: newdata lacks column(s) {format_ids(missing)} used by the formula {spec['formula']!r}. "
                "Add them (every covariate of the model is needed to predict)."
            )
        na = newdata[used].isna().to_numpy()
        if na.any():
            rows = na.any(axis=1)
            raise ModelSpecificationError(
                f"{where}: {int(rows.sum())} newdata row(s) have missing covariate values "
                f"(rows: {format_ids(newdata.index[rows])}). Fill or drop them first."
            )
        try:
            mm = ms.get_model_matrix(newdata, na_action="ignore", output="pandas")
        except Exception as exc:
            raise ModelSpecificationError(
                f"{where}: the formula {spec['formula']!r} could not be evaluated on newdata "
                f"({type(exc).__name__}: {exc}). Check that categorical columns use levels seen in the fit."
            ) from exc
        frame = pd.DataFrame(np.asarray(mm, dtype=float), columns=[term_name(str(c)) for c in mm.columns])
        lost = [c for c in columns if c not in frame.columns]
        if lost:  # pragma: no cover - formulaic keeps the fitted encoding
            raise ModelSpecificationError(f"{where}: newdata does not produce design columns {format_ids(lost)}.")
        return frame[columns].to_numpy(dtype=float)
    covariates = list(spec.get("covariates") or [])
    levels = spec.get("levels", {})
    missing = [c for c in covariates if c not in newdata.columns]
    if missing:
        raise ModelSpecificationError(
            f"{where}: newdata lacks covariate column(s) {format_ids(missing)} "
            f"(the model uses {format_ids(covariates)}). Add them."
        )
    cols = []
    for cov in covariates:
        s = newdata[cov]
        if s.isna().any():
            bad = s.isna().to_numpy()
            raise ModelSpecificationError(
                f"{where}: covariate {cov!r} has {int(bad.sum())} missing value(s) in newdata "
                f"(rows: {format_ids(newdata.index[bad])}). Fill or drop them first."
            )
        if cov in levels:
            lv = list(levels[cov])
            known = np.zeros(len(s), dtype=bool)
            for level in lv:
                known |= _levels_match(s, level)
            if not known.all():
                raise ModelSpecificationError(
                    f"{where}: covariate {cov!r} has level(s) {format_ids(pd.unique(s[~known]))} not seen in the "
                    f"fit (levels: {format_ids(lv)}). Predict only for levels the model was fitted on."
                )
            for level in lv[1:]:
                cols.append(_levels_match(s, level).astype(float))
        else:
            if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
                raise ModelSpecificationError(
                    f"{where}: covariate {cov!r} has dtype {s.dtype} in newdata but was numeric in the fit. "
                    "Convert it to numbers."
                )
            cols.append(s.to_numpy(dtype=float))
    x = np.column_stack(cols) if cols else np.zeros((len(newdata), 0))
    if x.shape[1] != len(columns):  # pragma: no cover - guarded by the levels above
        raise ModelSpecificationError(f"{where}: newdata gives {x.shape[1]} design columns, the fit has {len(columns)}.")
    return x


def strata_for_newdata(spec: dict, newdata: pd.DataFrame, where: str) -> np.ndarray | None:
    """Stratum code of each newdata row, or None when newdata lacks the strata columns."""
    scols = list(spec.get("strata_cols") or [])
    if not scols or not all(c in newdata.columns for c in scols):
        return None
    labels = list(spec["strata_levels"])
    if len(scols) == 1:
        keys = list(newdata[scols[0]])
    else:
        keys = list(pd.MultiIndex.from_frame(newdata[scols]))
    lookup = {lab: i for i, lab in enumerate(labels)}
    codes = np.array([lookup.get(k, -1) for k in keys], dtype=np.int64)
    if (codes < 0).any():
        bad = [k for k, c in zip(keys, codes) if c < 0]
        raise ModelSpecificationError(
            f"{where}: newdata has strata {format_ids(bad)} not in the fit (strata: {format_ids(labels)}). "
            "Predict only for strata the model was fitted on."
        )
    return codes

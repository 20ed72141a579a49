"""fit_glmm against R lme4::glmer (Laplace and nAGQ > 1) and lmer (REML and ML), bad input.

Golden values: ``tests/golden/glmm.json`` from ``tests/r/glmm.R`` on the simulated patient-week screens
``tests/golden/data/gee_uds.csv`` (random intercept per patient, 300 patients), on the demo cohort's weekly
screens (``tests/golden/data/glmm_demo_weeks.csv``: ``derive.repeated.uds_weeks`` of 800 demo episodes, written
by ``tests/r/make_glmm_demo_data.py``; a random intercept per episode, and per programme) and on the HELP trial
(``../shared/datasets/helprct.csv``, random intercept per substance or race group), and a singular fit (rows
dealt to 30 groups, no between-group variance: lme4's boundary theta = 0). R's optimiser is run to
``rhoend = 1e-12`` so both sides are converged. Tolerances (the issue's): estimates 1e-4 relative (or 2e-4 of their standard
error, for a flat direction where R stops short; our log-likelihood is then the higher), standard
errors 1e-3 relative (glmer's SEs come from its finite-difference Hessian, step 1e-4, so they carry an error
of order 1e-5..1e-4 of their own), random-effect variance 1e-4 relative, log-likelihood 1e-4 absolute,
conditional modes 1e-4 absolute.

One documented difference: for ``nAGQ > 1`` lme4's ``logLik()`` omits the saturated model's log-likelihood
``sum(y log y - y - log y!)`` (lme4 issues #161, #567: the AGQ deviance is built from deviance residuals), which
is 0 for 0/1 responses but not for counts. ``fit_glmm`` reports the full log-likelihood on every ``nagq`` (so
Laplace and AGQ fits are comparable); the test adds the constant to R's value for the Poisson AGQ case.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from conftest import GOLDEN_DIR, load_golden, requires_r, run_r_script
from iop_research.exceptions import EstimatorInputError, IopError, ModelSpecificationError
from iop_research.longitudinal.glmm import GLANCE_GLMM_COLUMNS, RANEF_COLUMNS, TIDY_GLMM_COLUMNS, fit_glmm

UDS_BIN = "positive ~ mat + week + female + age + site"
UDS_GAU = "craving ~ mat + week + age"
DEMO = "positive ~ week + has_mat + age + sex + substance"
HELP_BIN = "homeless01 ~ age + female + treat + cesd"
HELP_POI = "d1 ~ age + female + treat + cesd"
HELP_GAU = "cesd ~ age + female + treat + substance"

CASES = {
    "uds_binomial_laplace": ("uds", dict(formula=UDS_BIN, group_col="id", nagq=1)),
    "uds_binomial_agq7": ("uds", dict(formula=UDS_BIN, group_col="id", nagq=7)),
    "uds_binomial_agq15": ("uds", dict(formula=UDS_BIN, group_col="id", nagq=15)),
    "uds_gaussian_reml": ("uds", dict(formula=UDS_GAU, group_col="id", family="gaussian")),
    "uds_gaussian_ml": ("uds", dict(formula=UDS_GAU, group_col="id", family="gaussian", reml=False)),
    "uds_binomial_singular": ("uds", dict(formula="positive ~ mat + week + age", group_col="rg")),
    "demo_episode_laplace": ("demo", dict(formula=DEMO, group_col="episode_id")),
    "demo_episode_agq9": ("demo", dict(formula=DEMO, group_col="episode_id", nagq=9)),
    "demo_program_laplace": ("demo", dict(formula=DEMO, group_col="program")),
    "help_binomial_laplace": ("help", dict(formula=HELP_BIN, group_col="substance")),
    "help_binomial_agq9": ("help", dict(formula=HELP_BIN, group_col="substance", nagq=9)),
    "help_poisson_laplace": ("help", dict(formula=HELP_POI, group_col="racegrp", family="poisson")),
    "help_poisson_agq5": ("help", dict(formula=HELP_POI, group_col="racegrp", family="poisson", nagq=5)),
    "help_gaussian_reml": ("help", dict(formula=HELP_GAU, group_col="racegrp", family="gaussian")),
    "help_gaussian_ml": ("help", dict(formula=HELP_GAU, group_col="racegrp", family="gaussian", reml=False)),
}
R_TERMS = {"site[T.south]": "sitesouth", "site[T.west]": "sitewest", "treat[T.yes]": "treatyes",
           "substance[T.cocaine]": "substancecocaine", "substance[T.heroin]": "substanceheroin",
           "sex[T.male]": "sexmale", "sex[T.unknown]": "sexunknown"}
R_TERMS.update({f"substance[T.{s}]": f"substance{s}" for s in ("cannabis", "opioids", "other", "sedatives",
                                                                "stimulants")})


@pytest.fixture(scope="module")
def frames(help_path) -> dict:
    uds = pd.read_csv(GOLDEN_DIR / "data" / "gee_uds.csv")
    uds["rg"] = np.arange(len(uds)) % 30  # rows dealt to 30 groups: no between-group variance
    hlp = pd.read_csv(help_path)
    hlp = hlp.assign(homeless01=(hlp["homeless"] == "homeless").astype(int))
    demo = pd.read_csv(GOLDEN_DIR / "data" / "glmm_demo_weeks.csv")
    return {"uds": uds, "help": hlp, "demo": demo}


@pytest.fixture(scope="module")
def fits(frames) -> dict:
    return {case: fit_glmm(frames[data], **kw) for case, (data, kw) in CASES.items()}


def _saturated_loglik(y: np.ndarray) -> float:
    return float(np.sum(special.xlogy(y, y) - y - special.gammaln(y + 1.0)))


def _compare(res, r, frames, case):
    data, kw = CASES[case]
    assert [R_TERMS.get(t, t) for t in res.tidy["term"]] == r["term"]
    # 1e-4 relative, or within 2e-4 standard errors: in a flat direction (the demo's 42 rows of sex "unknown")
    # R's optimiser stops 1e-4 short; the log-likelihood check below shows ours is not the less converged one
    est, r_est = res.tidy["estimate"].to_numpy(), np.array(r["estimate"])
    bad = np.abs(est - r_est) > np.maximum(1e-4 * np.abs(r_est), 2e-4 * res.tidy["std_error"].to_numpy())
    assert not bad.any(), list(res.tidy["term"][bad])
    np.testing.assert_allclose(res.tidy["std_error"], r["std_error"], rtol=1e-3)
    if "p_value" in r:
        # compared as |z| = isf(p / 2): tiny p-values magnify the SEs' 1e-4 differences
        np.testing.assert_allclose(stats.norm.isf(res.tidy["p_value"] / 2), stats.norm.isf(np.array(r["p_value"]) / 2),
                                   rtol=1e-3)
    g = res.glance.iloc[0]
    assert g["re_variance"] == pytest.approx(r["re_variance"], rel=1e-4, abs=1e-10)  # abs: the singular fit
    if r["residual_variance"] is not None:
        assert g["residual_variance"] == pytest.approx(r["residual_variance"], rel=1e-6)
    else:
        assert np.isnan(g["residual_variance"])
    r_loglik = r["loglik"]
    if kw.get("family") == "poisson" and kw.get("nagq", 1) > 1:  # lme4 #161: AGQ logLik relative to saturated
        r_loglik += _saturated_loglik(frames[data]["d1"].to_numpy(float))
    assert g["loglik"] == pytest.approx(r_loglik, abs=1e-4)
    assert g["loglik"] >= r_loglik - 1e-6
    assert g["n_obs"] == r["n_obs"] and g["n_groups"] == r["n_groups"]
    assert bool(g["converged"])
    re_ = res.extra["random_effects"]
    assert [str(v) for v in re_["group"]] == r["ranef_group"]
    np.testing.assert_allclose(re_["estimate"], r["ranef"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_lme4(fits, frames, case):
    _compare(fits[case], load_golden("glmm")[case], frames, case)


@requires_r
def test_matches_lme4_live(fits, frames, tmp_path):
    """Re-run tests/r/glmm.R and compare every case with the fresh output (not only the committed golden file)."""
    live = run_r_script("glmm", tmp_path / "glmm.json")  # about 90 s of R CPU (the demo AGQ fit dominates)
    for case in CASES:
        _compare(fits[case], live[case], frames, case)


def test_aic_bic_as_r(fits):
    """AIC/BIC count beta, tau (and sigma for gaussian) as R does."""
    golden = load_golden("glmm")
    for case in ("uds_binomial_laplace", "uds_gaussian_reml", "help_poisson_laplace", "help_gaussian_ml"):
        g = fits[case].glance.iloc[0]
        assert g["aic"] == pytest.approx(golden[case]["aic"], abs=2e-4)
        assert g["bic"] == pytest.approx(golden[case]["bic"], abs=2e-4)


def test_quadrature_converges_to_the_integral(fits):
    """More nodes change the binomial fit less and less (7 vs 15 nodes agree closer than Laplace vs 7)."""
    lap, q7, q15 = (fits[c].tidy["estimate"].to_numpy() for c in
                    ("uds_binomial_laplace", "uds_binomial_agq7", "uds_binomial_agq15"))
    assert np.max(np.abs(q15 - q7)) < 0.1 * np.max(np.abs(q7 - lap))


def test_result_contract(fits):
    for case, res in fits.items():
        fam = CASES[case][1].get("family", "binomial")
        assert tuple(res.tidy.columns) == TIDY_GLMM_COLUMNS[fam]
        assert tuple(res.glance.columns) == GLANCE_GLMM_COLUMNS
        assert tuple(res.extra["random_effects"].columns) == RANEF_COLUMNS
        vc = res.extra["vcov"].set_index("term")
        np.testing.assert_allclose(np.sqrt(np.diag(vc.to_numpy())), res.tidy["std_error"], rtol=1e-12)
    res = fits["uds_binomial_agq7"]
    row = res.tidy.set_index("term").loc["site[T.south]"]
    assert row["label"] == "Site: south"
    z = stats.norm.ppf(0.975)
    assert row["or_conf_high"] == pytest.approx(np.exp(row["estimate"] + z * row["std_error"]))
    g = res.glance.iloc[0]
    assert g["method"] == "AGQ" and g["nagq"] == 7 and g["re_sd"] == pytest.approx(np.sqrt(g["re_variance"]))
    assert fits["help_poisson_laplace"].tidy["rate_ratio"].iloc[1] == pytest.approx(
        np.exp(fits["help_poisson_laplace"].tidy["estimate"].iloc[1]))
    assert fits["uds_gaussian_ml"].glance["method"].iloc[0] == "ML"


def test_row_order_does_not_matter(frames, fits):
    shuffled = frames["uds"].sample(frac=1.0, random_state=5)
    res = fit_glmm(shuffled, **CASES["uds_binomial_laplace"][1])
    np.testing.assert_allclose(res.tidy["estimate"], fits["uds_binomial_laplace"].tidy["estimate"], rtol=1e-6)


def test_recovers_simulated_truth():
    """A binomial random intercept simulated with tau^2 = 1 and a log-odds ratio of -0.7 is recovered."""
    rng = np.random.default_rng(7)
    n_g, m = 400, 10
    grp = np.repeat(np.arange(n_g), m)
    x = rng.binomial(1, 0.5, n_g)[grp]
    eta = -0.3 - 0.7 * x + rng.normal(0, 1.0, n_g)[grp]
    d = pd.DataFrame({"g": grp, "x": x, "y": (rng.random(n_g * m) < special.expit(eta)).astype(int)})
    res = fit_glmm(d, formula="y ~ x", group_col="g", nagq=9)
    est = res.tidy.set_index("term").loc["x"]
    assert est["conf_low"] < -0.7 < est["conf_high"]
    assert 0.7 < res.glance["re_variance"].iloc[0] < 1.4


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        (dict(family="gamma"), ModelSpecificationError, "family must be one of"),
        (dict(nagq=0), ModelSpecificationError, "nagq must be"),
        (dict(nagq=26), ModelSpecificationError, "nagq must be"),
        (dict(nagq=3, family="gaussian", formula="craving ~ mat"), ModelSpecificationError, "applies to binomial"),
        (dict(formula="mat + week"), ModelSpecificationError, "response ~ terms"),
        (dict(formula="positive ~ mat + (1 | id)"), ModelSpecificationError, "group_col="),
        (dict(formula="nope ~ mat"), EstimatorInputError, "not found"),
        (dict(group_col="patient"), EstimatorInputError, "not found"),
        (dict(formula="craving ~ mat"), EstimatorInputError, "other than 0/1"),
        (dict(formula="craving ~ mat", family="poisson"), EstimatorInputError, "non-integer"),
        (dict(conf_level=1.5), ModelSpecificationError, "conf_level"),
    ],
)
def test_bad_input(frames, kw, exc, match):
    args = dict(formula=UDS_BIN, group_col="id") | kw
    with pytest.raises(exc, match=match) as info:
        fit_glmm(frames["uds"], **args)
    assert isinstance(info.value, IopError)


def test_bad_values(frames):
    uds = frames["uds"]
    bad = uds.copy()
    bad.loc[bad.index[3], "positive"] = np.nan
    with pytest.raises(EstimatorInputError, match="missing"):
        fit_glmm(bad, formula=UDS_BIN, group_col="id")
    bad = uds.astype({"id": float})
    bad.loc[bad.index[2], "id"] = np.nan
    with pytest.raises(EstimatorInputError, match="missing"):
        fit_glmm(bad, formula=UDS_BIN, group_col="id")
    with pytest.raises(ModelSpecificationError, match="both"):
        fit_glmm(uds.assign(positive=0), formula=UDS_BIN, group_col="id")
    with pytest.raises(ModelSpecificationError, match="single group"):
        fit_glmm(uds.assign(one=1), formula=UDS_BIN, group_col="one")
    with pytest.raises(ModelSpecificationError, match="linear combination|constant"):
        fit_glmm(uds.assign(mat2=2 * uds["mat"]), formula="positive ~ mat + mat2", group_col="id")


def _check_profile(g):
    uds = pd.read_csv(GOLDEN_DIR / "data" / "gee_uds.csv")
    for q in (1, 7):
        res = fit_glmm(uds, formula="positive ~ mat + week + female + age + site", group_col="id", nagq=q,
                       profile=True).glance.iloc[0]
        want = g[f"nagq{q}"]
        assert res["re_sd"] == pytest.approx(want["sd"], rel=1e-4)
        # lme4 interpolates its profile with a spline; we solve for the roots: agreement to about 1e-5
        assert res["re_sd_conf_low"] == pytest.approx(want["low"], rel=1e-4)
        assert res["re_sd_conf_high"] == pytest.approx(want["high"], rel=1e-4)


def test_profile_interval_of_the_sd_matches_lme4():
    """R: confint(glmer(...), parm = "theta_", method = "profile") (tests/r/glmm_profile.R)."""
    _check_profile(load_golden("glmm_profile"))


@requires_r
@pytest.mark.slow
def test_live_r_glmm_profile(tmp_path):
    _check_profile(run_r_script("glmm_profile", tmp_path / "glmm_profile.json"))


def test_profile_is_off_by_default_and_refused_for_gaussian():
    uds = pd.read_csv(GOLDEN_DIR / "data" / "gee_uds.csv")
    g = fit_glmm(uds, formula="positive ~ mat + week", group_col="id").glance.iloc[0]
    assert np.isnan(g["re_sd_conf_low"]) and np.isnan(g["re_sd_conf_high"])
    with pytest.raises(ModelSpecificationError, match="profile=True"):
        fit_glmm(uds, formula="craving ~ mat + week", group_col="id", family="gaussian", profile=True)

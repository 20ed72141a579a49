"""Tests of iop_research._design: one design-matrix builder (formulaic) for every regression.

The coding is checked against R's ``model.matrix`` with treatment contrasts (golden:
``Rscript --vanilla tests/r/design.R <datasets_dir> tests/golden/design.json`` on
tests/golden/data/design.csv, written by tests/r/make_design_data.py) and against hand-built
dummies; the estimators that use it are compared with R in test_cox.py (HELP ``substance``),
test_causal.py (``glm`` propensity model with ``substance``) and test_interval.py (``survreg``
with a factor and a logical covariate). The same covariates get the same term names and labels
from every estimator.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import GOLDEN_DIR, load_golden, requires_r, run_r_script

from iop_research._design import build_design, check_identifiable, term_label
from iop_research.designs.causal import iptw, landmark_analysis
from iop_research.exceptions import EstimatorInputError, ModelSpecificationError
from iop_research.survival.competing import fit_cause_specific, fit_fine_gray
from iop_research.survival.cox import fit_cox
from iop_research.survival.interval import fit_interval_aft


def _design_data() -> pd.DataFrame:
    """tests/golden/data/design.csv with the types tests/r/design.R gives its columns."""
    d = pd.read_csv(GOLDEN_DIR / "data" / "design.csv")
    return d.assign(severity=pd.Categorical(d["severity"], categories=["low", "mid", "high"], ordered=True))


# (R case, our call, our term names)
R_CASES = [
    (0, {"covariates": ["age", "sex", "psych", "program", "severity"]},
     ["age", "sex[T.m]", "psych[T.True]", "program[T.Site B]", "program[T.Site C]", "severity[T.mid]",
      "severity[T.high]"]),
    (0, {"formula": "age + C(sex) + psych + C(program) + severity"},
     ["age", "sex[T.m]", "psych[T.True]", "program[T.Site B]", "program[T.Site C]", "severity[T.mid]",
      "severity[T.high]"]),
    (1, {"formula": "age * sex + C(site)"}, ["age", "sex[T.m]", "site[T.2]", "site[T.3]", "age:sex[T.m]"]),
]


@pytest.mark.parametrize("case, kwargs, terms", R_CASES)
def test_design_matches_r_model_matrix(case, kwargs, terms):
    """R: model.matrix(~ age + sex + psych + program + severity) and model.matrix(~ age * sex + factor(site))
    with treatment contrasts (tests/r/design.R): same columns, same order, same values."""
    g = load_golden("design")["cases"][case]
    d = build_design(_design_data(), func="f", **kwargs)
    assert list(d.terms) == terms
    assert len(d.terms) == len(g["colnames"])
    np.testing.assert_array_equal(d.matrix, np.asarray(g["matrix"], dtype=float))


@requires_r
def test_design_golden_is_reproducible_live(tmp_path):
    """Rscript --vanilla tests/r/design.R <datasets_dir> <out_json> gives the committed JSON."""
    live = run_r_script("design", tmp_path / "design.json")
    committed = load_golden("design")
    assert [c["colnames"] for c in live["cases"]] == [c["colnames"] for c in committed["cases"]]
    for a, b in zip(live["cases"], committed["cases"]):
        np.testing.assert_array_equal(np.asarray(a["matrix"]), np.asarray(b["matrix"]))


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(20261207)
    n = 240
    sex = rng.choice(["f", "m"], n)
    psych = rng.random(n) < 0.4
    program = rng.choice(["Site A", "Site B", "Site C"], n)
    age = rng.normal(35, 9, n).round()
    lp = 0.4 * (sex == "m") + 0.5 * psych - 0.3 * (program == "Site B") + 0.01 * (age - 35)
    t = rng.exponential(60 / np.exp(lp))
    c = rng.uniform(20, 200, n)
    cause = np.where(t <= c, rng.choice([1, 2], n, p=[0.7, 0.3]), 0)
    days = np.ceil(np.minimum(t, c))
    treat = rng.binomial(1, 1 / (1 + np.exp(-(0.5 * psych - 0.4 * (sex == "m")))))
    return pd.DataFrame({
        "days": days, "cause": cause, "relapse": (cause == 1).astype(int), "sex": sex,
        "psychiatric_comorbidity": psych, "program": program, "age": age, "treat": treat,
        "lo": np.floor(days / 7) * 7, "hi": np.where(cause > 0, np.floor(days / 7) * 7 + 7, np.inf),
    })


COVS = ["age", "sex", "psychiatric_comorbidity", "program"]
TERMS = ["age", "sex[T.m]", "psychiatric_comorbidity[T.True]", "program[T.Site B]", "program[T.Site C]"]
LABELS = ["Age", "Sex: m", "Psychiatric comorbidity: yes", "Program: Site B", "Program: Site C"]


def test_covariates_coded_as_treatment_dummies(frame):
    d = build_design(frame, covariates=COVS, func="f")
    assert list(d.terms) == TERMS and list(d.labels) == LABELS
    hand = np.column_stack([
        frame["age"], frame["sex"] == "m", frame["psychiatric_comorbidity"],
        frame["program"] == "Site B", frame["program"] == "Site C",
    ]).astype(float)
    np.testing.assert_array_equal(d.matrix, hand)
    assert dict(d.assign) == {"age": (0,), "sex": (1,), "psychiatric_comorbidity": (2,), "program": (3, 4)}
    assert d.variables == tuple(COVS)


def test_formula_gives_the_same_names(frame):
    """C(x) is named x[T.level], as a categorical column is: one name per covariate."""
    a = build_design(frame, covariates=COVS, func="f")
    b = build_design(frame, formula="age + C(sex) + psychiatric_comorbidity + C(program)", func="f")
    c = build_design(frame, formula="relapse ~ age + C(sex, contr.treatment) + psychiatric_comorbidity + program",
                     func="f")
    for other in (b, c):
        assert other.terms == a.terms and other.labels == a.labels
        np.testing.assert_array_equal(other.matrix, a.matrix)
    inter = build_design(frame, formula="treat * C(sex)", func="f")
    assert list(inter.terms) == ["treat", "sex[T.m]", "treat:sex[T.m]"]
    assert inter.labels[-1] == "Treat x Sex: m"
    assert dict(inter.assign) == {"treat": (0,), "sex": (1,), "treat:sex": (2,)}


def test_labels():
    assert term_label("psychiatric_comorbidity[T.True]") == "Psychiatric comorbidity: yes"
    assert term_label("is_homeless[T.False]") == "Is homeless: no"
    assert term_label("program[T.Site B]") == "Program: Site B"
    assert term_label("age") == "Age"
    assert term_label("I(age ** 2)") == "I(age ** 2)"
    assert term_label("(Intercept)") == "(Intercept)"


def test_level_order(frame):
    d = frame.assign(program=pd.Categorical(frame["program"], categories=["Site C", "Site A", "Site B", "Site D"]))
    des = build_design(d, covariates=["program"], func="f")
    assert list(des.terms) == ["program[T.Site A]", "program[T.Site B]"]  # categories order; unused Site D dropped
    ordered = frame.assign(program=pd.Categorical(frame["program"], categories=["Site B", "Site C", "Site A"],
                                                  ordered=True))
    assert list(build_design(ordered, covariates=["program"], func="f").terms) == [
        "program[T.Site C]", "program[T.Site A]"]
    # pandas string and nullable boolean dtypes are categorical too
    s = frame.assign(sex=frame["sex"].astype("string"),
                     psychiatric_comorbidity=frame["psychiatric_comorbidity"].astype("boolean"))
    assert build_design(s, covariates=COVS, func="f").terms == tuple(TERMS)
    # numbers stay numeric; C() makes them categorical with sorted levels
    assert build_design(frame.assign(site=frame["program"].str[-1].map({"A": 1, "B": 2, "C": 3})),
                        formula="C(site)", func="f").terms == ("site[T.2]", "site[T.3]")


def test_errors(frame):
    with pytest.raises(ModelSpecificationError, match="single level"):
        build_design(frame.assign(sex="f"), covariates=["sex"], func="f")
    bad = frame.assign(age=frame["age"].where(frame.index != 4))
    with pytest.raises(EstimatorInputError,
                       match=r"^f: column 'age' \(covariate\) has 1 missing or infinite value\(s\) \(rows: 4\)\. Drop"):
        build_design(bad, formula="age + sex", func="f")
    with pytest.raises(EstimatorInputError, match="uses column\\(s\\) not found in the data frame: agee") as info:
        build_design(frame, formula="agee + sex", func="f")
    assert info.value.check == "missing_column"
    with pytest.raises(EstimatorInputError, match="not found"):
        build_design(frame, covariates=["agee"], func="f")
    with pytest.raises(ModelSpecificationError, match="cannot be parsed"):
        build_design(frame, formula="age +* sex", func="f")
    with pytest.raises(ModelSpecificationError, match="exactly one of"):
        build_design(frame, covariates=["age"], formula="age", func="f")
    with pytest.raises(ModelSpecificationError, match="exactly one of"):
        build_design(frame, func="f")
    with pytest.raises(ModelSpecificationError, match="listed twice"):
        build_design(frame, covariates=["age", "age"], func="f")
    with pytest.raises(EstimatorInputError, match=r"column 'np.log\(age - 19\)' \(covariate term\) has"):
        build_design(frame.assign(age=frame["age"].clip(lower=19)), formula="np.log(age - 19)", func="f")
    with pytest.raises(EstimatorInputError, match="neither numeric nor categorical"):
        build_design(frame.assign(when=pd.Timestamp("2024-01-01")), covariates=["when"], func="f")
    assert build_design(frame, covariates=(), func="f", allow_empty=True).matrix.shape == (len(frame), 0)


def test_identifiability():
    x = np.column_stack([np.arange(6.0), np.ones(6), np.arange(6.0) * 2 + 1])
    with pytest.raises(ModelSpecificationError, match=r"term\(s\) b are constant"):
        check_identifiable(x, ["a", "b", "c"], func="f")
    with pytest.raises(ModelSpecificationError, match=r"singular design: term 'c' is a linear combination of a"):
        check_identifiable(x[:, [0, 2]], ["a", "c"], func="f")
    check_identifiable(x[:, [0]], ["a"], func="f")


def test_input_not_modified(frame):
    before = frame.copy()
    build_design(frame, covariates=COVS, func="f")
    build_design(frame, formula="age + C(sex) * treat", func="f")
    pd.testing.assert_frame_equal(frame, before)


def test_same_terms_and_labels_from_every_estimator(frame):
    """One covariate, one name, one label: Cox, Fine-Gray, cause-specific Cox, interval AFT, the IPTW
    propensity model and the landmark Cox model code the same covariates identically."""
    fits = {
        "fit_cox": fit_cox(frame, duration_col="days", event_col="relapse", covariates=COVS),
        "fit_cox formula": fit_cox(frame, duration_col="days", event_col="relapse",
                                   formula="age + C(sex) + psychiatric_comorbidity + C(program)"),
        "fit_fine_gray": fit_fine_gray(frame, duration_col="days", event_col="cause", cause=1, covariates=COVS),
        "fit_cause_specific": fit_cause_specific(frame, duration_col="days", event_col="cause", cause=1,
                                                 covariates=COVS),
        "fit_interval_aft": fit_interval_aft(frame, lower_col="lo", upper_col="hi", covariates=COVS),
        "iptw": iptw(frame, treatment_col="treat", covariates=COVS),
        "landmark_analysis": landmark_analysis(frame, landmark_days=0, duration_col="days", event_col="relapse",
                                               exposure_col="treat", covariates=COVS),
    }
    for name, res in fits.items():
        tidy = res.tidy[~res.tidy["term"].isin(["(Intercept)", "Log(scale)", "treat"])]
        assert tidy["term"].tolist() == TERMS, name
        assert tidy["label"].tolist() == LABELS, name
        assert list(res.tidy.columns[:2]) == ["term", "label"], name
    # the cause-specific Cox model is fit_cox on the cause indicator
    np.testing.assert_allclose(fits["fit_cause_specific"].tidy["estimate"], fits["fit_cox"].tidy["estimate"],
                               rtol=1e-12)
    np.testing.assert_allclose(fits["fit_cox formula"].tidy["estimate"], fits["fit_cox"].tidy["estimate"], rtol=1e-12)

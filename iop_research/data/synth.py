"""Synthetic IOP cohorts with known truth.

:func:`simulate_cohort` writes the six canonical tables of the data contract
(:mod:`iop_research.data.schema`) for a simulated population of people treated in
intensive outpatient programmes (IOP), together with the latent quantities
that generated them (``IOPData.truth``): each episode's latent relapse and
death times, its exact MAT on/off switch times, its latent discharge day and
the observation end. Estimators can therefore be checked against the truth.

The generative model, in the order it is simulated
--------------------------------------------------
1. **People** enter the data on a day drawn uniformly over the calendar
   window; their observation ends at the window end, at death, or earlier
   when they leave the data (loss to follow-up).
2. **Episodes.** Intake covariates per episode; discharge reason from a
   multinomial logit around the TEDS-D IOP shares, and length of stay
   (LOS) from a log-normal per reason (medians near TEDS: completers 50,
   drop-outs 26 days). Death before the drawn discharge ends the episode
   with reason ``death``.
3. **MAT** for a share of opioid episodes (and a few alcohol episodes):
   initiation probability depends on severity and psychiatric comorbidity
   (which also raise the relapse hazard: confounding by indication);
   initiation delay 0-60 days; course length Weibull (about 28% of
   buprenorphine courses stop within a month, about 60% before 180 days);
   dispensings with occasional gaps.
4. **Aftercare** engagement after discharge for some episodes.
5. **Relapse**: proportional hazards on a log-logistic baseline, with
   time-varying states (in treatment, on MAT, in aftercare, after a
   non-completed discharge, the 4 weeks after a MAT interval ends),
   simulated exactly by inverting the cumulative hazard on each episode's
   piecewise-constant state timeline (vectorised over all episodes).
   **Death** is simulated the same way on the person's timeline: a baseline
   rate (age, opioid use) lowered on days covered by methadone or
   buprenorphine (Larochelle 2018) and raised about 9-fold over the
   on-treatment rate in the first weeks after they stop (Cornish 2010).
   Opt-in (``confounder_weeks > 0``): a weekly time-varying confounder that
   MOUD lowers and that raises MOUD initiation and the relapse hazard
   (``truth.confounder``).
6. **Observation**: weekly urine drug screens in treatment (intake positives
   during the blanking period are not relapses), a positive screen on the
   relapse day when relapse happens in treatment, and after discharge a
   self-report, ED visit, overdose or readmission on the relapse day.
   A readmission starts a new episode on that day.

Time convention: latent times are in (continuous) days from admission; a
latent time ``t`` is recorded on calendar day ``admit_date + ceil(t)``,
i.e. on the day ``d`` with ``t`` in ``(d - 1, d]``, as for R's
``Surv(start, stop, event)`` intervals.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from iop_research.exceptions import ModelSpecificationError
from iop_research.data.io import IOPData
from iop_research.data.schema import (
    TABLE_COLUMNS,
    Col,
    DischargeReason,
    Employment,
    EventType,
    Housing,
    Medication,
    Modality,
    PrimarySubstance,
    ReferralSource,
    Sex,
    UdsResult,
)

__all__ = ["SimulationEffects", "SimulationTruth", "DEFAULT_EFFECTS", "simulate_cohort", "strategy_risks"]

_LN = math.log

# --------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulationEffects:
    """Parameters of the cohort simulator (log hazard ratios, shares and shapes).

    All hazard-ratio parameters are natural-log hazard ratios of the **relapse**
    hazard unless the name says otherwise. Continuous covariates are centred
    (severity at 5 points, age at 35 years) so the baseline hazard is that of a
    typical alcohol-use-disorder episode after discharge, off MAT.

    Attributes
    ----------
    baseline_scale_days : float, default 550.0
        Scale ``alpha`` of the log-logistic baseline (days): ``H0(t) =
        log(1 + (t / alpha) ** shape)``, i.e. ``S0(alpha) = 0.5``. With the
        other defaults about half of the episodes relapse within a year.
    baseline_shape : float, default 0.85
        Shape of the log-logistic baseline; ``<= 1`` gives a hazard that is
        highest early and decelerates.
    blanking_days : int, default 7
        Relapse hazard is zero during ``(0, blanking_days]`` after admission:
        use early in an episode (intake positives) is not a relapse.
    log_hr_in_treatment : float, default ln(0.6)
        While enrolled (admission to discharge) versus after discharge.
    log_hr_mat_opioid : float, default ln(0.5)
        On MAT (a day covered by a dispensing) versus not, opioid episodes.
    log_hr_mat_alcohol : float, default ln(0.85)
        On MAT versus not, alcohol episodes (naltrexone, acamprosate, disulfiram).
    log_hr_aftercare : float, default ln(0.75)
        During aftercare engagement (after discharge).
    log_hr_noncompleted_after_discharge : float, default ln(1.3)
        After discharge when the discharge was not ``completed`` or ``transferred``.
    log_hr_after_mat_stop : float, default ln(2)
        During the ``after_mat_stop_days`` after a MAT interval ends (a stop
        or a refill gap), while off MAT: the early post-discontinuation risk
        spike of the relapse hazard. The value is a judgement anchored on the
        mortality literature, not a published relapse estimate: in Cornish et al.
        2010 [6]_ all-cause mortality in weeks 1-2 and 3-4 after opiate substitution
        treatment stopped was 4.8 and 4.3 per 100 person-years against 0.95 in the
        rest of the time off treatment (about 5x and 4.5x, mostly overdose after
        lost tolerance); return to use is taken to rise less, by a factor 2 over
        the first 4 weeks. 0 switches the window off (no breakpoints are added).
    after_mat_stop_days : float, default 28.0
        Length of that post-stop window (days).
    log_hr_severity_per_point : float, default 0.08
        Per point of the 0-10 intake severity score (centred at 5).
    log_hr_psychiatric_comorbidity : float, default 0.25
    log_hr_prior_episode : float, default 0.05
        Per prior treatment episode (counted up to 5).
    log_hr_age_per_10_years : float, default -0.10
        Per 10 years of age at admission (centred at 35).
    log_hr_female : float, default -0.05
    log_hr_housing_unstable, log_hr_housing_homeless : float, default 0.20, 0.40
        Versus stable housing.
    log_hr_unemployed : float, default 0.15
        Versus employed or not in the labour force.
    log_hr_residential_step_down : float, default -0.15
        Referral as step-down from residential care versus any other source.
    log_hr_opioids, log_hr_stimulants, log_hr_cannabis, log_hr_sedatives, log_hr_other_substance : float
        Primary substance versus alcohol (defaults 0.20, 0.15, -0.10, 0.10, 0.0).
    mat_share_opioid : float, default 0.5
        Target share of opioid episodes that start MAT (the logit intercept is
        set so the population share is close to it).
    mat_logit_severity_per_point, mat_logit_comorbidity : float, default 0.30, 0.60
        Effects on the log-odds of MAT initiation (confounding: both also raise
        the relapse hazard).
    mat_share_alcohol : float, default 0.15
        Share of alcohol episodes that start an alcohol-use-disorder medication.
    mat_opioid_medication_shares : tuple of float, default (0.55, 0.30, 0.15)
        Buprenorphine, methadone, extended-release naltrexone.
    mat_immediate_share : float, default 0.5
        Share of MAT courses that start within 0-3 days of admission; the rest
        start uniformly on days 4-60.
    mat_duration_shape, mat_duration_scale_days : float, default 0.45, 220.0
        Weibull law of the target MAT course length (capped at 5 years); with
        refill granularity about 28% of buprenorphine courses last at most 30
        days and about 60% less than 180 days.
    mat_gap_probability : float, default 0.10
        Probability that a refill is late (a gap of 3-20 days; methadone: a
        missed 1-3 days), never long enough to end a 30-day-grace era.
    discharge_shares : tuple of float
        Target shares of completed, transferred, dropped_out, terminated,
        incarcerated, other (defaults 0.38, 0.18, 0.23, 0.14, 0.025, 0.045; TEDS
        2004 IOP). Deaths come from the mortality model.
    los_median_days : tuple of float
        Median LOS per reason, same order (defaults 50, 38, 26, 32, 28, 35).
    los_sdlog : tuple of float
        Log-normal sd of LOS per reason, same order.
    aftercare_share_completed, aftercare_share_other : float, default 0.55, 0.20
        Probability of aftercare engagement after a completed / other discharge.
    aftercare_mean_days : float, default 120.0
        Mean (exponential) length of aftercare engagement.
    death_rate_per_year : float, default 0.008
        All-cause mortality of a 35-year-old non-opioid patient off MAT.
    log_hr_death_opioids, log_hr_death_age_per_10_years : float, default 0.9, 0.4
        Person-level effects on the death hazard (primary substance at the first
        episode; age at entry).
    log_hr_death_methadone, log_hr_death_buprenorphine, log_hr_death_naltrexone : float
        Log hazard ratios of **death** on a day covered by a dispensing of that
        medication versus off MAT (defaults ln(0.47), ln(0.62), 0): Larochelle et
        al. 2018 [5]_, mortality in the 12 months after a non-fatal opioid overdose:
        all-cause adjusted HR 0.47 (95% CI 0.32-0.71) for methadone, 0.63
        (0.46-0.87) for buprenorphine (opioid-related 0.62, the value used here) and
        no association for naltrexone (1.44, 0.84-2.46).
        The naltrexone effect applies to extended-release and oral naltrexone;
        acamprosate and disulfiram do not change the death hazard. When supplies of
        two medications overlap (a carried-over supply), methadone's effect is
        used before buprenorphine's before naltrexone's.
    log_hr_death_after_mat_stop, log_hr_death_after_mat_stop_weeks_3_4 : float, default ln(9), ln(8)
        Log ratio of the **death** hazard in weeks 1-2 (days ``(s, s + 14]``) and
        weeks 3-4 (``(s + 14, s + 28]``) after a methadone or buprenorphine interval
        ends at ``s`` (a stop or a refill gap), while off all MAT, **to the
        on-treatment death hazard of that medication**: the window's hazard is
        ``baseline * exp(log_hr_death_<medication> + log_hr_death_after_mat_stop)``.
        Death windows opened shortly before a readmission continue into the next
        episode; when windows overlap the largest hazard applies. Defaults from
        Cornish et al. 2010 [6]_: mortality 9 (95% CI 5.4-14.9) and 8 (4.7-13.7)
        times the rate during the rest of the time on treatment in weeks 1-2 and
        3-4 after a stop, and 1.9 (1.3-2.8) times it later off treatment.
        Arithmetic against the off-MAT baseline: after methadone
        ``0.47 * 9 = 4.23`` in weeks 1-2 and ``0.47 * 8 = 3.76`` in weeks 3-4;
        after buprenorphine ``0.62 * 9 = 5.58`` and ``0.62 * 8 = 4.96``; from week 5
        the off-MAT rate is ``1 / 0.47 = 2.1`` (methadone) and ``1 / 0.62 = 1.6``
        (buprenorphine) times the on-treatment rate, near Cornish's 1.9.
        Naltrexone, acamprosate and disulfiram stops open no death window.
    readmission_share : float, default 0.30
        Share of relapses after discharge that show up as a readmission (and
        start a new episode); the rest are self-report, ED visit or overdose.
    loss_to_followup_share : float, default 0.15
        Share of people who leave the data before the window ends.
    loss_to_followup_mean_days : float, default 730.0
        Mean (exponential) time in the data of those who leave it.
    intake_positive_share : float, default 0.45
        Share of intake (day 0) urine screens that are positive.
    positive_after_relapse_share : float, default 0.5
        Share of later weekly screens in treatment that are positive after a relapse.
    missed_screen_share : float, default 0.0
        Share of scheduled weekly screens in treatment (after the intake screen) that are
        missed (``result = "missed"``). 0 (the demo cohort) draws nothing, so the cohort is
        unchanged.
    missed_screen_odds_after_relapse : float, default 3.0
        Odds ratio of missing a screen after the episode's relapse (missed screens depend on
        use, so "missed = positive" and "missed = missing" differ); used only when
        ``missed_screen_share > 0``. ``truth.missed_screens`` holds what each missed screen
        would have shown.
    programme_completion_sd : float, default 0.0
        SD of programme effects on the log-odds of completing treatment: one draw per
        programme from N(0, sd^2), added to the "completed" logit, so the logit of
        P(completed) moves by exactly that effect (a random-intercept truth);
        ``truth.params["programme_completion_effects"]`` records them. 0 (the demo) draws
        nothing.
    tlfb_share : float, default 0.0
        Share of alcohol episodes given a Timeline Followback series (``IOPData.use_days``, the
        optional contract table): one row per day from admission for ``tlfb_days`` days (cut at
        the observation end and the patient's next admission). Consistent with the latent
        relapse time ``t`` (``truth.episodes.relapse_day``): every day before day ``ceil(t)`` is
        abstinent, day ``ceil(t)`` is a drinking day, later days drink with probability
        ``tlfb_use_after_relapse``; a drinking day is heavy (NIAAA: at least 4 standard drinks
        for women, 5 for men) with probability ``tlfb_heavy_share``, else 1 drink to one below
        the threshold. Drawn after everything else, so the other tables are those of the same
        seed without it. 0 (the demo): no table (``use_days`` is None).
    tlfb_days : int, default 90
        Days recorded per episode (the usual 90-day TLFB window).
    tlfb_use_after_relapse : float, default 0.6
        Probability that a day after the first drinking day is a drinking day.
    tlfb_heavy_share : float, default 0.5
        Probability that a drinking day is a heavy-drinking day.
    confounder_weeks : int, default 0
        Number of weekly values of a **time-varying confounder affected by treatment**
        ``L`` (read it as "a week of heavy craving / other-drug use"), measured on days
        0, 7, ..., ``7 * (confounder_weeks - 1)`` after admission. 0 (the default and
        the demo) simulates no confounder and draws nothing, so cohorts are unchanged.
        The causal structure, week ``w`` (``A_w``: opioid MAT coverage on day ``7w``)::

            L_{w-1} -> L_w <- A_w          (c) MOUD lowers L
            L_w -> start of MOUD in week w  (b) L raises initiation
            L_w -> relapse hazard on [7w, 7w + 7)   (a) L raises relapse
            severity -> L, MOUD, relapse   (baseline confounding)

        ``logit P(L_w = 1) = confounder_logit_baseline + confounder_logit_previous *
        L_{w-1} + confounder_logit_moud * A_w + confounder_logit_severity_per_point *
        (severity - 5)`` (``L_{-1} = 0``; ``A_w`` is coverage by any MAT dispensing on
        day ``7w``). An opioid episode that the baseline draw did not put on MAT starts
        MOUD in week ``w`` with probability ``confounder_moud_start_probability`` when
        ``L_w = 1`` (and never when ``L_w = 0``), on a day drawn from ``7w + 1`` to
        ``7w + 6``, with a medication, course length and dispensings drawn as for any
        course; the relapse hazard is multiplied by ``exp(log_hr_confounder)`` while
        ``L = 1`` (``L = 0`` from day ``7 * confounder_weeks`` on). So ``L`` confounds
        the MOUD-relapse relation and is itself on the causal path from earlier MOUD:
        adjusting for it in a time-varying Cox model is biased, a marginal structural
        model is not. ``L`` is latent: it is in ``truth.confounder`` only, not in the
        contract tables.
    confounder_logit_baseline, confounder_logit_previous, confounder_logit_moud : float
        Defaults -1.5, 1.5, -1.2 (see ``confounder_weeks``).
    confounder_logit_severity_per_point : float, default 0.15
    log_hr_confounder : float, default ln(1.8)
        Relapse log hazard ratio while ``L = 1``.
    confounder_moud_start_probability : float, default 0.25
        Weekly probability of starting MOUD in a week with ``L = 1`` (opioid episodes
        not started by the baseline draw).

    Notes
    -----
    Death is drawn per person on the piecewise-constant timeline of its episodes:
    the baseline rate (``death_rate_per_year`` with the opioid and age effects)
    times the MAT and post-stop multipliers above, inverted exactly (one Exp(1)
    budget per person, spent episode by episode up to each readmission), as relapse
    is. ``truth.patients["death_rate_per_day"]`` holds each person's baseline rate.

    References
    ----------
    .. [5] Larochelle MR, Bernson D, Land T, et al. Medication for opioid use
       disorder after nonfatal opioid overdose and association with mortality: a
       cohort study. Ann Intern Med 2018;169:137-145.
    .. [6] Cornish R, Macleod J, Strang J, Vickerman P, Hickman M. Risk of death
       during and after opiate substitution treatment in primary care: prospective
       observational study in UK General Practice Research Database. BMJ
       2010;341:c5475.
    """

    baseline_scale_days: float = 550.0
    baseline_shape: float = 0.85
    blanking_days: int = 7
    log_hr_in_treatment: float = _LN(0.6)
    log_hr_mat_opioid: float = _LN(0.5)
    log_hr_mat_alcohol: float = _LN(0.85)
    log_hr_aftercare: float = _LN(0.75)
    log_hr_noncompleted_after_discharge: float = _LN(1.3)
    log_hr_after_mat_stop: float = _LN(2.0)
    after_mat_stop_days: float = 28.0
    log_hr_death_methadone: float = _LN(0.47)
    log_hr_death_buprenorphine: float = _LN(0.62)
    log_hr_death_naltrexone: float = 0.0
    log_hr_death_after_mat_stop: float = _LN(9.0)
    log_hr_death_after_mat_stop_weeks_3_4: float = _LN(8.0)
    log_hr_severity_per_point: float = 0.08
    log_hr_psychiatric_comorbidity: float = 0.25
    log_hr_prior_episode: float = 0.05
    log_hr_age_per_10_years: float = -0.10
    log_hr_female: float = -0.05
    log_hr_housing_unstable: float = 0.20
    log_hr_housing_homeless: float = 0.40
    log_hr_unemployed: float = 0.15
    log_hr_residential_step_down: float = -0.15
    log_hr_opioids: float = 0.20
    log_hr_stimulants: float = 0.15
    log_hr_cannabis: float = -0.10
    log_hr_sedatives: float = 0.10
    log_hr_other_substance: float = 0.0
    mat_share_opioid: float = 0.5
    mat_logit_severity_per_point: float = 0.30
    mat_logit_comorbidity: float = 0.60
    mat_share_alcohol: float = 0.15
    mat_opioid_medication_shares: tuple[float, float, float] = (0.55, 0.30, 0.15)
    mat_immediate_share: float = 0.5
    mat_duration_shape: float = 0.45
    mat_duration_scale_days: float = 220.0
    mat_gap_probability: float = 0.10
    discharge_shares: tuple[float, ...] = (0.38, 0.18, 0.23, 0.14, 0.025, 0.045)
    los_median_days: tuple[float, ...] = (50.0, 38.0, 26.0, 32.0, 28.0, 35.0)
    los_sdlog: tuple[float, ...] = (0.35, 0.6, 0.75, 0.7, 0.7, 0.7)
    aftercare_share_completed: float = 0.55
    aftercare_share_other: float = 0.20
    aftercare_mean_days: float = 120.0
    death_rate_per_year: float = 0.008
    log_hr_death_opioids: float = 0.9
    log_hr_death_age_per_10_years: float = 0.4
    readmission_share: float = 0.30
    loss_to_followup_share: float = 0.15
    loss_to_followup_mean_days: float = 730.0
    intake_positive_share: float = 0.45
    positive_after_relapse_share: float = 0.5
    missed_screen_share: float = 0.0
    missed_screen_odds_after_relapse: float = 3.0
    programme_completion_sd: float = 0.0
    tlfb_share: float = 0.0
    tlfb_days: int = 90
    tlfb_use_after_relapse: float = 0.6
    tlfb_heavy_share: float = 0.5
    confounder_weeks: int = 0
    confounder_logit_baseline: float = -1.5
    confounder_logit_previous: float = 1.5
    confounder_logit_moud: float = -1.2
    confounder_logit_severity_per_point: float = 0.15
    log_hr_confounder: float = _LN(1.8)
    confounder_moud_start_probability: float = 0.25

    def to_dict(self) -> dict[str, Any]:
        """Parameters as a plain dict (for provenance records and JSON)."""
        return dataclasses.asdict(self)


#: The simulator's default parameters (see :class:`SimulationEffects`).
DEFAULT_EFFECTS = SimulationEffects()


@dataclass(frozen=True)
class SimulationTruth:
    """Latent quantities behind a simulated cohort (``IOPData.truth``).

    All times are in days from the episode's admission (continuous for latent
    times; integer for days that appear in the tables). A latent time ``t`` is
    observed on calendar day ``admit_date + ceil(t)``.

    Attributes
    ----------
    effects : SimulationEffects
        Parameters used.
    params : dict
        Other settings: seed, window, programmes, blanking days.
    episodes : pandas.DataFrame
        One row per episode: ``episode_id, patient_id, primary_substance,
        linear_predictor`` (baseline log relapse hazard ratio, time-fixed
        part), ``relapse_day`` (latent relapse time, may lie beyond censoring
        or death), ``death_day`` (latent death time, ``inf`` if none before the
        simulation horizon), ``discharge_day`` (latent discharge day, also for
        episodes still enrolled at observation end), ``discharge_reason``
        (latent), ``observation_end_day`` (days from admission to the person's
        observation end), ``is_relapse_observed``, ``relapse_in_treatment``,
        ``mat_medication`` (``None`` without MAT), ``aftercare_start_day``,
        ``aftercare_stop_day`` (``NaN`` without aftercare).
    mat_intervals : pandas.DataFrame
        Exact MAT switch times: one row per continuously covered interval
        ``episode_id, patient_id, medication, start_day, stop_day``; the
        episode is on MAT for ``start_day <= t < stop_day`` (the relapse
        hazard switches exactly there). Intervals are cut at the next
        admission of the same person; a supply still covering that day
        continues as an interval of the new episode starting at day 0 (its
        medication may differ from that episode's ``mat_medication``).
        Intervals may extend past observation end; dispensings after
        observation end are not in the medications table. Intervals of one
        episode may touch or overlap (overlaps only with a carried-over supply).
    patients : pandas.DataFrame
        One row per person: ``patient_id, entry_day, death_day,
        death_rate_per_day, observation_end_day, is_lost_to_followup`` (days from
        the window start; ``death_rate_per_day`` is the baseline, off-MAT death
        hazard that MAT coverage and post-stop windows multiply).
    missed_screens : pandas.DataFrame
        One row per missed weekly screen (``effects.missed_screen_share > 0``):
        ``episode_id, patient_id, day`` (days from admission) and
        ``would_be_positive``, what the screen would have shown; empty otherwise.
    confounder : pandas.DataFrame
        The latent weekly confounder (``effects.confounder_weeks > 0``): one row per
        episode and week ``episode_id, patient_id, week, day`` (``7 * week``, days
        from admission), ``value`` (``L_w``), ``on_mat`` (``A_w``, covered by MAT on
        that day), ``moud_started_by_confounder`` (the episode's MOUD was started
        by ``L`` in that week); rows for all weeks, also after relapse, death or
        observation end (latent); empty otherwise.
    """

    effects: SimulationEffects
    params: dict
    episodes: pd.DataFrame = field(repr=False)
    mat_intervals: pd.DataFrame = field(repr=False)
    patients: pd.DataFrame = field(repr=False)
    missed_screens: pd.DataFrame = field(default=None, repr=False)
    confounder: pd.DataFrame = field(default=None, repr=False)

    def strategy_risks(self, **kwargs) -> pd.DataFrame:
        """Counterfactual risks of MOUD strategies under this cohort's effects.

        :func:`strategy_risks` with ``effects=self.effects`` (and the cohort's programme
        effects and number of programmes); keyword arguments are passed on (``grace_days``,
        ``horizon_days``, ``sustain_days``, ``stop_grace_days``, ``strategies``,
        ``n_patients``, ``seed``).
        """
        kwargs.setdefault("n_programs", len(self.params.get("programs", {})) or 4)
        if "programme_completion_effects" in self.params:
            kwargs.setdefault("programme_effects", list(self.params["programme_completion_effects"].values()))
        return strategy_risks(self.effects, **kwargs)


# --------------------------------------------------------------------------------------
# Fixed vocabularies and programme templates
# --------------------------------------------------------------------------------------

_SUBSTANCES = [
    PrimarySubstance.opioids.value,
    PrimarySubstance.alcohol.value,
    PrimarySubstance.stimulants.value,
    PrimarySubstance.cannabis.value,
    PrimarySubstance.sedatives.value,
    PrimarySubstance.other.value,
]
_SUBSTANCE_P = np.array([0.35, 0.35, 0.14, 0.09, 0.04, 0.03])
_OPI, _ALC = 0, 1

_REASONS = [
    DischargeReason.completed.value,
    DischargeReason.transferred.value,
    DischargeReason.dropped_out.value,
    DischargeReason.terminated.value,
    DischargeReason.incarcerated.value,
    DischargeReason.other.value,
    DischargeReason.death.value,
]
_R_COMPLETED, _R_TRANSFERRED, _R_DROPPED, _R_TERMINATED, _R_INCARC, _R_OTHER, _R_DEATH = range(7)

_REFERRALS = [
    ReferralSource.self.value,
    ReferralSource.residential_step_down.value,
    ReferralSource.healthcare.value,
    ReferralSource.criminal_justice.value,
    ReferralSource.community.value,
    ReferralSource.other.value,
]
_REFERRAL_P = np.array([0.30, 0.15, 0.20, 0.20, 0.10, 0.05])
_REF_STEP_DOWN, _REF_CJ = 1, 3

_HOUSING = [Housing.stable.value, Housing.unstable.value, Housing.homeless.value]
_EMPLOYMENT = [Employment.employed.value, Employment.unemployed.value, Employment.not_in_labor_force.value]
_SEX = [Sex.male.value, Sex.female.value, Sex.unknown.value]
_SEX_P = np.array([0.62, 0.37, 0.01])
_RACE = np.array(["white", "black", "asian", "american_indian", "multiple", "other", None], dtype=object)
_RACE_P = np.array([0.62, 0.18, 0.02, 0.02, 0.04, 0.07, 0.05])
_ETHNICITY = np.array(["hispanic", "not_hispanic", "unknown", None], dtype=object)
_ETHNICITY_P = np.array([0.14, 0.80, 0.04, 0.02])

_MEDS = [
    Medication.buprenorphine.value,
    Medication.methadone.value,
    Medication.naltrexone_xr.value,
    Medication.naltrexone_oral.value,
    Medication.acamprosate.value,
    Medication.disulfiram.value,
]
_M_BUP, _M_MET, _M_XR, _M_NTX, _M_ACA, _M_DIS = range(6)

_MODALITIES = [m.value for m in Modality]
_MOD = {m: i for i, m in enumerate(_MODALITIES)}

# Programme templates: (weekdays Mon=0, per-slot sessions (modality, minutes),
# share of episodes with family involvement, site weight). Site k uses template k % 4.
_PROGRAM_TEMPLATES = [
    {  # Site A: standard CBT-oriented IOP, Mon/Wed/Fri
        "weekdays": (0, 2, 4),
        "slots": (
            (("group", 120), ("education", 60), ("individual", 50)),
            (("group", 120), ("education", 60)),
            (("group", 120), ("education", 60), ("family", 60)),
        ),
        "family_share": 0.15,
        "weight": 0.35,
    },
    {  # Site B: holistic programme (yoga, meditation, art), Mon/Tue/Thu
        "weekdays": (0, 1, 3),
        "slots": (
            (("group", 90), ("education", 60), ("individual", 50)),
            (("group", 90), ("holistic", 90)),
            (("group", 90), ("education", 60), ("holistic", 60), ("family", 60)),
        ),
        "family_share": 0.10,
        "weight": 0.25,
    },
    {  # Site C: family-systems programme, evenings Tue/Wed/Thu
        "weekdays": (1, 2, 3),
        "slots": (
            (("group", 120), ("education", 60), ("individual", 50)),
            (("group", 120), ("family", 90)),
            (("group", 120), ("education", 60), ("family", 60)),
        ),
        "family_share": 0.60,
        "weight": 0.20,
    },
    {  # Site D: long process groups, Mon/Wed/Thu
        "weekdays": (0, 2, 3),
        "slots": (
            (("group", 180), ("individual", 60)),
            (("group", 120), ("education", 60)),
            (("group", 180), ("family", 60)),
        ),
        "family_share": 0.20,
        "weight": 0.20,
    },
]

_MAX_READMISSION_ROUNDS = 50
_MAT_MAX_DAYS = 5 * 365


# --------------------------------------------------------------------------------------
# Small vectorised helpers
# --------------------------------------------------------------------------------------


def _ragged(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Owner index and within-owner position for ``counts[i]`` rows per owner."""
    counts = np.asarray(counts, dtype=np.int64)
    owner = np.repeat(np.arange(counts.size), counts)
    starts = np.cumsum(counts) - counts
    within = np.arange(owner.size, dtype=np.int64) - np.repeat(starts, counts)
    return owner, within


def _choice(rng: np.random.Generator, p: np.ndarray, size: int) -> np.ndarray:
    """Category codes drawn with probabilities ``p`` (rows of ``p`` if 2-d)."""
    p = np.asarray(p, dtype=float)
    if p.ndim == 1:
        return rng.choice(p.size, size=size, p=p / p.sum())
    cum = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
    u = rng.random(size)[:, None]
    return np.minimum((u > cum).sum(axis=1), p.shape[1] - 1)


def _h0(t: np.ndarray, scale: float, shape: float) -> np.ndarray:
    """Log-logistic cumulative baseline hazard ``log(1 + (t/scale)^shape)``."""
    with np.errstate(over="ignore"):
        return np.log1p(np.power(np.asarray(t, dtype=float) / scale, shape))


def _h0_inverse(h: np.ndarray, scale: float, shape: float) -> np.ndarray:
    with np.errstate(over="ignore"):
        return scale * np.power(np.expm1(h), 1.0 / shape)


def _group_first(group: np.ndarray) -> np.ndarray:
    """Boolean mask of the first row of each run of equal, sorted ``group`` values."""
    first = np.ones(group.size, dtype=bool)
    first[1:] = group[1:] != group[:-1]
    return first


_PROBABILITY_FIELDS = (
    "mat_share_opioid", "mat_share_alcohol", "mat_immediate_share", "mat_gap_probability",
    "aftercare_share_completed", "aftercare_share_other", "readmission_share", "loss_to_followup_share",
    "intake_positive_share", "positive_after_relapse_share", "missed_screen_share",
    "confounder_moud_start_probability",
)
_POSITIVE_FIELDS = (
    "baseline_scale_days", "baseline_shape", "mat_duration_shape", "mat_duration_scale_days",
    "aftercare_mean_days", "loss_to_followup_mean_days", "after_mat_stop_days", "missed_screen_odds_after_relapse",
)
_NONNEGATIVE_FIELDS = ("programme_completion_sd",)
_TUPLE_LENGTHS = {"mat_opioid_medication_shares": 3, "discharge_shares": 6, "los_median_days": 6, "los_sdlog": 6}


def _check_effects(eff: SimulationEffects) -> SimulationEffects:
    """Raise ModelSpecificationError listing every parameter outside its domain."""
    bad = []
    for name in _PROBABILITY_FIELDS:
        v = getattr(eff, name)
        if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
            bad.append(f"{name}={v!r} (a probability in [0, 1])")
    for name in _POSITIVE_FIELDS:
        v = getattr(eff, name)
        if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
            bad.append(f"{name}={v!r} (a finite number > 0)")
    for name in _NONNEGATIVE_FIELDS:
        v = getattr(eff, name)
        if not (isinstance(v, (int, float)) and v >= 0 and math.isfinite(v)):
            bad.append(f"{name}={v!r} (a finite number >= 0)")
    for name, length in _TUPLE_LENGTHS.items():
        v = getattr(eff, name)
        ok = len(v) == length and all(isinstance(x, (int, float)) and x >= 0 for x in v)
        if name in ("los_median_days",):
            ok = ok and all(x > 0 for x in v)
        if not ok or (name.endswith("shares") and sum(v) <= 0):
            bad.append(f"{name}={v!r} ({length} non-negative numbers)")
    if not (isinstance(eff.blanking_days, (int, np.integer)) and eff.blanking_days >= 0):
        bad.append(f"blanking_days={eff.blanking_days!r} (an integer >= 0)")
    if not (isinstance(eff.confounder_weeks, (int, np.integer)) and not isinstance(eff.confounder_weeks, bool)
            and 0 <= eff.confounder_weeks <= 520):
        bad.append(f"confounder_weeks={eff.confounder_weeks!r} (an integer from 0 to 520)")
    if not (isinstance(eff.death_rate_per_year, (int, float)) and eff.death_rate_per_year >= 0):
        bad.append(f"death_rate_per_year={eff.death_rate_per_year!r} (a number >= 0)")
    if bad:
        raise ModelSpecificationError(
            f"Simulation parameters out of range: {'; '.join(bad)}. "
            "Fix them with dataclasses.replace(DEFAULT_EFFECTS, ...) or the effects mapping."
        )
    return eff


def _resolve_effects(effects) -> SimulationEffects:
    if effects is None:
        return DEFAULT_EFFECTS
    if isinstance(effects, SimulationEffects):
        return _check_effects(effects)
    if isinstance(effects, Mapping):
        known = {f.name for f in dataclasses.fields(SimulationEffects)}
        unknown = sorted(set(effects) - known)
        if unknown:
            raise ModelSpecificationError(
                f"Unknown simulation parameter(s) {unknown} in effects. "
                f"Use names of SimulationEffects fields, e.g. {sorted(known)[:4]}."
            )
        return _check_effects(dataclasses.replace(DEFAULT_EFFECTS, **dict(effects)))
    raise ModelSpecificationError(
        f"effects must be None, a SimulationEffects or a mapping of overrides, got {type(effects).__name__}. "
        "Pass e.g. dataclasses.replace(DEFAULT_EFFECTS, log_hr_mat_opioid=0.0)."
    )


class _Progress:
    """Stage-wise progress bar; a no-op when disabled."""

    def __init__(self, enabled: bool, total: int):
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc="simulate_cohort", unit="step")

    def step(self, label: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(label, refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# --------------------------------------------------------------------------------------
# Simulation pieces (arrays in, arrays out)
# --------------------------------------------------------------------------------------


def _draw_patients(rng, n, n_days, eff):
    entry = rng.integers(0, n_days, size=n)
    age_entry = np.clip(rng.normal(37.0, 11.0, size=n), 18, 75)
    sex = _choice(rng, _SEX_P, n)
    race = _RACE[_choice(rng, _RACE_P, n)]
    ethnicity = _ETHNICITY[_choice(rng, _ETHNICITY_P, n)]
    comorbid = rng.random(n) < 0.45
    severity_latent = rng.normal(0.0, 1.0, size=n)
    disadvantage = rng.normal(0.0, 1.0, size=n)  # drives housing/employment
    substance = _choice(rng, _SUBSTANCE_P, n)
    lost = rng.random(n) < eff.loss_to_followup_share
    lost_day = entry + np.ceil(rng.exponential(eff.loss_to_followup_mean_days, size=n)).astype(np.int64)
    return dict(
        entry=entry, age_entry=age_entry, sex=sex, race=race, ethnicity=ethnicity,
        comorbid=comorbid, severity_latent=severity_latent, disadvantage=disadvantage,
        substance=substance, lost=lost, lost_day=lost_day,
    )


def _draw_episode_covariates(rng, pat, pidx, prev, program_p):
    """Intake covariates of new episodes of persons ``pidx`` (``prev``: previous episode or None)."""
    m = pidx.size
    sev = 5.0 + 1.6 * pat["severity_latent"][pidx] + 0.9 * pat["comorbid"][pidx] + rng.normal(0, 1.2, m) - 0.4
    if prev is not None:
        sev = sev + 0.5
    sev = np.clip(np.round(sev * 2) / 2, 0.0, 10.0)
    dis = pat["disadvantage"][pidx] + rng.normal(0, 0.7, m)
    housing = np.where(dis > 1.6, 2, np.where(dis > 0.8, 1, 0))
    u = rng.random(m)
    p_unemp = 1 / (1 + np.exp(-(dis - 0.3)))
    employment = np.where(u < p_unemp * 0.85, 1, np.where(u < 0.85, 0, 2))
    referral = _choice(rng, _REFERRAL_P, m)
    if prev is None:
        substance = pat["substance"][pidx]
        prior = rng.poisson(1.0 + 0.3 * (sev - 5).clip(0), size=m)
        program = _choice(rng, program_p, m)
    else:
        keep = rng.random(m) < 0.9
        substance = np.where(keep, prev["substance"], _choice(rng, _SUBSTANCE_P, m))
        prior = prev["prior"] + 1
        same_site = rng.random(m) < 0.7
        program = np.where(same_site, prev["program"], _choice(rng, program_p, m))
    return dict(sev=sev, housing=housing, employment=employment, referral=referral,
                substance=substance, prior=prior, program=program,
                comorbid=pat["comorbid"][pidx])


def _draw_discharge(rng, cov, eff, prog_u=None):
    """Latent discharge reason code (0-5) and LOS in whole days (>= 1)."""
    m = cov["sev"].size
    base = np.log(np.asarray(eff.discharge_shares, dtype=float))
    sev_c = cov["sev"] - 5.0
    step = cov["referral"] == _REF_STEP_DOWN
    cj = cov["referral"] == _REF_CJ
    homeless = cov["housing"] == 2
    employed = cov["employment"] == 0
    logits = np.tile(base, (m, 1))
    # covariate terms are centred at their population means so the shares stay near target
    step_c, cj_c, homeless_c, employed_c = step - 0.15, cj - 0.20, homeless - 0.10, employed - 0.48
    logits[:, 0] += 0.3 * step_c + 0.2 * employed_c - 0.10 * sev_c
    logits[:, 1] += 0.15 * (cov["comorbid"] - 0.45)
    logits[:, 2] += 0.10 * sev_c + 0.3 * homeless_c - 0.3 * step_c
    logits[:, 3] += 0.08 * sev_c + 0.2 * cj_c
    logits[:, 4] += 1.0 * cj_c - 0.1
    if prog_u is not None:
        logits[:, 0] += prog_u[cov["program"]]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    reason = _choice(rng, p, m)
    med = np.asarray(eff.los_median_days, dtype=float)[reason]
    sd = np.asarray(eff.los_sdlog, dtype=float)[reason]
    los = np.maximum(1, np.round(med * np.exp(sd * rng.standard_normal(m)))).astype(np.int64)
    return reason, los


def _draw_mat(rng, cov, eff):
    """MAT medication code (-1 none), start day and target course length (days)."""
    m = cov["sev"].size
    opi = cov["substance"] == _OPI
    alc = cov["substance"] == _ALC
    lin = eff.mat_logit_severity_per_point * (cov["sev"] - 5.0) + eff.mat_logit_comorbidity * (
        cov["comorbid"] - 0.45
    )
    p_share = min(max(eff.mat_share_opioid, 1e-9), 1 - 1e-9)
    # attenuated intercept so the population share stays close to the target
    p = 1 / (1 + np.exp(-(math.log(p_share / (1 - p_share)) + lin)))
    on = (opi & (rng.random(m) < p)) | (alc & (rng.random(m) < eff.mat_share_alcohol))
    med = np.full(m, -1, dtype=np.int64)
    opi_med = np.array([_M_BUP, _M_MET, _M_XR])[_choice(rng, np.asarray(eff.mat_opioid_medication_shares), m)]
    alc_med = np.array([_M_NTX, _M_ACA, _M_DIS])[_choice(rng, np.array([0.5, 0.35, 0.15]), m)]
    med[on & opi] = opi_med[on & opi]
    med[on & alc] = alc_med[on & alc]
    immediate = rng.random(m) < eff.mat_immediate_share
    start = np.where(immediate, rng.integers(0, 4, m), rng.integers(4, 61, m)).astype(np.int64)
    dur = eff.mat_duration_scale_days * rng.weibull(eff.mat_duration_shape, m)
    dur = np.clip(np.ceil(dur), 1, _MAT_MAX_DAYS).astype(np.int64)
    return med, start, dur


def _draw_dispensings(rng, med, start, dur, eff):
    """Dispensing rows of MAT courses: (course index, day from admission, days_supply).

    Refills follow each other without overlap; a refill is late with
    probability ``eff.mat_gap_probability``. The course stops with the first
    dispensing whose supply ends at or after ``start + dur``.
    """
    t = start.astype(np.int64).copy()
    stop_target = start + dur
    active = np.flatnonzero(med >= 0)
    out_c, out_t, out_s = [], [], []
    p_gap = eff.mat_gap_probability
    while active.size:
        mm = med[active]
        tt = t[active]
        elapsed = tt - start[active]
        k = active.size
        u = rng.random(k)
        sup = np.full(k, 30, dtype=np.int64)
        bup = mm == _M_BUP
        sup[bup] = np.where(u[bup] < 0.3, 7, np.where(u[bup] < 0.6, 14, 30))
        xr = mm == _M_XR
        sup[xr] = 28
        met = mm == _M_MET
        if met.any():
            e = elapsed[met]
            um = u[met]
            s_early = np.where(um < 0.85, 1, 2)
            s_mid = np.where(um < 0.5, 1, np.where(um < 0.8, 2, 3))
            s_late = np.where(um < 0.2, 1, np.where(um < 0.6, 3, 7))
            sup[met] = np.where(e < 30, s_early, np.where(e < 90, s_mid, s_late))
        out_c.append(active)
        out_t.append(tt)
        out_s.append(sup)
        ug = rng.random(k)
        gap = np.where(ug < p_gap, rng.integers(3, 21, k), 0)
        gap = np.where(met, np.where(ug < p_gap / 3, rng.integers(1, 4, k), 0), gap)
        end = tt + sup
        nxt = end + gap
        t[active] = nxt
        active = active[end < stop_target[active]]
    if not out_c:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z
    c = np.concatenate(out_c)
    d = np.concatenate(out_t)
    s = np.concatenate(out_s)
    order = np.lexsort((d, c))
    return c[order], d[order], s[order]


def _coverage_intervals(course, day, supply):
    """Merge contiguous dispensings (sorted by course, day) into covered intervals."""
    if course.size == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z
    end = day + supply
    new = _group_first(course)
    new[1:] |= day[1:] > end[:-1]
    first = np.flatnonzero(new)
    starts = day[first]
    stops = np.maximum.reduceat(end, first)
    return course[first], starts, stops


_DOSE_TABLE = {_M_BUP: [8, 12, 16, 24], _M_MET: list(range(60, 125, 5)), _M_XR: [380],
               _M_NTX: [50], _M_ACA: [1998], _M_DIS: [250]}


def _draw_doses(rng, med):
    """Dose (mg) of each course's medication code (NaN without MAT)."""
    dose = np.full(med.size, np.nan)
    for code, values in _DOSE_TABLE.items():
        sel = med == code
        dose[sel] = rng.choice(np.array(values, dtype=float), size=int(sel.sum()))
    return dose


def _covered_at(n_ep, int_ep, int_start, int_stop, day):
    """Whether each episode is covered by one of its MAT intervals at ``day[episode]``."""
    inside = (int_start <= day[int_ep]) & (day[int_ep] < int_stop)
    return np.bincount(int_ep[inside], minlength=n_ep) > 0


def _simulate_confounder(rng, cov, med, mstart, mdur, dose, rows, ints, eff):
    """Weekly confounder ``L`` and the MOUD courses it starts (see ``SimulationEffects.confounder_weeks``).

    ``rows``: dispensings (course, day, supply) and ``ints``: coverage intervals
    (episode, start, stop, medication) of the episodes' baseline MAT; returns them
    with the new courses added, the updated ``med, mstart, mdur, dose`` and arrays
    ``L``, ``on`` (episodes, weeks) and ``started_week`` (-1 if not started by ``L``).
    """
    m, weeks = med.size, int(eff.confounder_weeks)
    med, mstart, mdur, dose = med.copy(), mstart.copy(), mdur.copy(), dose.copy()
    rows, ints = [list(rows)], [list(ints)]
    L = np.zeros((m, weeks), dtype=bool)
    on = np.zeros((m, weeks), dtype=bool)
    started = np.full(m, -1, dtype=np.int64)
    eligible = (cov["substance"] == _OPI) & (med < 0)
    sev_c = cov["sev"] - 5.0
    prev = np.zeros(m, dtype=bool)
    for w in range(weeks):
        day = np.full(m, 7.0 * w)
        cur = [np.concatenate([part[i] for part in ints]) for i in range(3)]
        on[:, w] = _covered_at(m, cur[0], cur[1], cur[2], day)
        logit = (eff.confounder_logit_baseline + eff.confounder_logit_previous * prev
                 + eff.confounder_logit_moud * on[:, w] + eff.confounder_logit_severity_per_point * sev_c)
        L[:, w] = rng.random(m) < 1.0 / (1.0 + np.exp(-logit))
        prev = L[:, w]
        go = np.flatnonzero(eligible & L[:, w] & (rng.random(m) < eff.confounder_moud_start_probability))
        if go.size == 0:
            continue
        eligible[go] = False
        started[go] = w
        k = go.size
        med[go] = np.array([_M_BUP, _M_MET, _M_XR])[_choice(rng, np.asarray(eff.mat_opioid_medication_shares), k)]
        mstart[go] = 7 * w + rng.integers(1, 7, k)
        dur = eff.mat_duration_scale_days * rng.weibull(eff.mat_duration_shape, k)
        mdur[go] = np.clip(np.ceil(dur), 1, _MAT_MAX_DAYS).astype(np.int64)
        dose[go] = _draw_doses(rng, med[go])
        sub_med = np.full(m, -1, dtype=np.int64)
        sub_med[go] = med[go]
        c, d, s = _draw_dispensings(rng, sub_med, mstart, mdur, eff)
        iv = _coverage_intervals(c, d, s)
        rows.append([c, d, s])
        ints.append([iv[0], iv[1], iv[2], med[iv[0]]])
    c, d, s = (np.concatenate([part[i] for part in rows]) for i in range(3))
    order = np.lexsort((d, c))
    rows_out = (c[order], d[order], s[order])
    ints_out = tuple(np.concatenate([part[i] for part in ints]) for i in range(4))
    return med, mstart, mdur, dose, rows_out, ints_out, L, on, started


def _simulate_relapse(rng, n_ep, lp, los, noncompleted, mat_beta, mat_ep, mat_start, mat_stop,
                      aft_start, aft_stop, eff, conf=None):
    """Exact latent relapse times by inverting the cumulative hazard on each state timeline.

    States (piecewise constant in time from admission): blanking (hazard 0),
    in treatment, on MAT (coverage intervals), aftercare, after a
    non-completed discharge, and (only when its effect is non-zero) the
    window after a MAT interval ends. ``conf``: the weekly confounder, an
    array (episodes, weeks) of 0/1 values holding on ``[7w, 7w + 7)``.
    """
    ep0 = np.arange(n_ep)
    has_aft = np.isfinite(aft_start)
    # breakpoints: (episode, time, d_blank, d_tx, d_mat, d_aft, d_nc, d_post, d_conf)
    parts = []

    def add(ep, time, blank=0, tx=0, mat=0, aft=0, nc=0, post=0, cf=0):
        k = ep.size
        parts.append((ep, np.asarray(time, dtype=float),
                      *(np.broadcast_to(np.asarray(v, dtype=np.int64), (k,))
                        for v in (blank, tx, mat, aft, nc, post, cf))))

    add(ep0, np.zeros(n_ep), blank=1, tx=1)
    add(ep0, np.full(n_ep, float(eff.blanking_days)), blank=-1)
    add(ep0, los.astype(float), tx=-1, nc=noncompleted.astype(np.int64))
    add(mat_ep, mat_start, mat=1)
    add(mat_ep, mat_stop, mat=-1)
    ea = ep0[has_aft]
    add(ea, aft_start[has_aft], aft=1)
    add(ea, aft_stop[has_aft], aft=-1)
    if eff.log_hr_after_mat_stop != 0:
        add(mat_ep, mat_stop, post=1)
        add(mat_ep, mat_stop + float(eff.after_mat_stop_days), post=-1)
    if conf is not None and conf.shape[1]:
        lv = np.asarray(conf, dtype=np.int64)
        step = np.diff(np.concatenate([np.zeros((n_ep, 1), np.int64), lv, np.zeros((n_ep, 1), np.int64)], axis=1),
                       axis=1)  # change at 7w, w = 0..W
        ce, cw = np.nonzero(step)
        add(ce, 7.0 * cw, cf=step[ce, cw])
    ep = np.concatenate([p[0] for p in parts])
    time = np.concatenate([p[1] for p in parts])
    deltas = np.stack([np.concatenate([p[i] for p in parts]) for i in range(2, 9)], axis=1)
    order = np.lexsort((time, ep))
    ep, time, deltas = ep[order], time[order], deltas[order]
    # grouped cumulative state (every episode starts at zero before its first breakpoint)
    cs = np.cumsum(deltas, axis=0)
    first = _group_first(ep)
    offset = (cs - deltas)[first]
    grp = np.cumsum(first) - 1
    state = cs - offset[grp]
    blank, tx, mat, aft, nc, post, cf = (state[:, i] for i in range(7))
    last = np.ones(ep.size, dtype=bool)
    last[:-1] = ep[1:] != ep[:-1]
    b = np.empty_like(time)
    b[:-1] = time[1:]
    b[last] = np.inf
    log_m = (lp[ep] + eff.log_hr_in_treatment * (tx > 0) + mat_beta[ep] * (mat > 0)
             + eff.log_hr_aftercare * ((aft > 0) & (tx <= 0))
             + eff.log_hr_noncompleted_after_discharge * ((nc > 0) & (tx <= 0))
             + eff.log_hr_after_mat_stop * ((post > 0) & (mat <= 0))
             + eff.log_hr_confounder * (cf > 0))
    mult = np.where(blank > 0, 0.0, np.exp(log_m))
    a_h = _h0(time, eff.baseline_scale_days, eff.baseline_shape)
    b_h = _h0(np.where(last, time, b), eff.baseline_scale_days, eff.baseline_shape)
    seg_h = mult * (b_h - a_h)  # zero for the (infinite) last segment here
    cum = np.cumsum(seg_h)
    cum_off = (cum - seg_h)[first]
    cum_end = cum - cum_off[grp]
    cum_start = cum_end - seg_h
    e = rng.exponential(1.0, n_ep)
    hit = last | (cum_end >= e[ep])
    idx = np.flatnonzero(hit)
    idx = idx[_group_first(ep[idx])]
    need = a_h[idx] + (e - cum_start[idx]) / mult[idx]
    t = _h0_inverse(need, eff.baseline_scale_days, eff.baseline_shape)
    return np.maximum(t, time[idx])


_DEATH_POST_EARLY_DAYS = 14.0  # weeks 1-2 after an opioid-agonist interval ends (Cornish 2010)
_DEATH_POST_LATE_DAYS = 28.0  # weeks 3-4


def _death_segments(n_ep, mat_ep, mat_start, mat_stop, mat_med, post_ep, post_stop, post_med, eff):
    """Piecewise-constant log hazard ratio of death on each episode's timeline.

    ``mat_*``: coverage intervals (episode, start, stop, medication code) in days
    from admission; ``post_*``: ends of methadone / buprenorphine intervals that
    open a post-stop window (episode, stop day, medication code; the stop day
    may be negative for a window carried over from the previous episode).
    Returns arrays (episode, segment start, segment end, log hazard ratio)
    sorted by episode and time; every episode's segments cover ``[0, inf)``.
    Covered days take the medication's effect (methadone before buprenorphine
    before naltrexone on overlaps); days off all MAT in weeks 1-2 / 3-4 after
    an agonist interval ends take the on-treatment effect of that medication
    plus ``log_hr_death_after_mat_stop`` / ``..._weeks_3_4`` (the largest when
    windows overlap); all other days 0.
    """
    ep0 = np.arange(n_ep)
    mat_med = np.asarray(mat_med, dtype=np.int64)
    post_med = np.asarray(post_med, dtype=np.int64)
    # state columns: any MAT, methadone, buprenorphine, naltrexone, early met/bup, late met/bup
    cols = 8
    parts_ep, parts_t, parts_d = [ep0], [np.zeros(n_ep)], [np.zeros((n_ep, cols), dtype=np.int64)]

    def add(ep, t, col, sign):
        d = np.zeros((ep.size, cols), dtype=np.int64)
        d[:, col] = sign
        parts_ep.append(ep)
        parts_t.append(np.maximum(np.asarray(t, dtype=float), 0.0))
        parts_d.append(d)

    for col, codes in ((0, None), (1, (_M_MET,)), (2, (_M_BUP,)), (3, (_M_XR, _M_NTX))):
        sel = np.ones(mat_ep.size, dtype=bool) if codes is None else np.isin(mat_med, codes)
        add(mat_ep[sel], mat_start[sel], col, 1)
        add(mat_ep[sel], mat_stop[sel], col, -1)
    if eff.log_hr_death_after_mat_stop != 0 or eff.log_hr_death_after_mat_stop_weeks_3_4 != 0:
        for k, code in ((0, _M_MET), (1, _M_BUP)):
            sel = post_med == code
            e, t = post_ep[sel], np.asarray(post_stop, dtype=float)[sel]
            add(e, t, 4 + k, 1)
            add(e, t + _DEATH_POST_EARLY_DAYS, 4 + k, -1)
            add(e, t + _DEATH_POST_EARLY_DAYS, 6 + k, 1)
            add(e, t + _DEATH_POST_LATE_DAYS, 6 + k, -1)
    ep = np.concatenate(parts_ep)
    time = np.concatenate(parts_t)
    deltas = np.concatenate(parts_d, axis=0)
    order = np.lexsort((time, ep))
    ep, time, deltas = ep[order], time[order], deltas[order]
    cs = np.cumsum(deltas, axis=0)
    first = _group_first(ep)
    grp = np.cumsum(first) - 1
    state = cs - (cs - deltas)[first][grp]
    last = np.ones(ep.size, dtype=bool)
    last[:-1] = ep[1:] != ep[:-1]
    end = np.empty_like(time)
    end[:-1] = time[1:]
    end[last] = np.inf
    b_met, b_bup, b_ntx = eff.log_hr_death_methadone, eff.log_hr_death_buprenorphine, eff.log_hr_death_naltrexone
    on = np.where(state[:, 1] > 0, b_met, np.where(state[:, 2] > 0, b_bup, np.where(state[:, 3] > 0, b_ntx, 0.0)))
    e1, e3 = eff.log_hr_death_after_mat_stop, eff.log_hr_death_after_mat_stop_weeks_3_4
    cand = np.stack([np.where(state[:, 4] > 0, b_met + e1, -np.inf), np.where(state[:, 5] > 0, b_bup + e1, -np.inf),
                     np.where(state[:, 6] > 0, b_met + e3, -np.inf), np.where(state[:, 7] > 0, b_bup + e3, -np.inf)],
                    axis=1).max(axis=1)
    off = state[:, 0] <= 0
    log_hr = np.where(off, np.where(np.isfinite(cand), cand, 0.0), on)
    return ep, time, end, log_hr


def _death_cumhaz(seg, rate, at):
    """Cumulative death hazard of each episode from admission to ``at`` (days, per episode)."""
    ep, a, b, log_hr = seg
    r = rate[ep] * np.exp(log_hr)
    at = np.asarray(at, dtype=float)[ep]
    with np.errstate(invalid="ignore"):
        contrib = r * np.clip(np.minimum(b, at) - a, 0.0, None)
    contrib = np.where(np.isfinite(contrib), contrib, 0.0)
    return np.bincount(ep, weights=contrib, minlength=rate.size)


def _invert_death(seg, rate, e):
    """Latent death time of each episode: the time at which the cumulative death hazard reaches ``e``.

    ``rate``: baseline death hazard per day of each episode's person (off MAT);
    ``e``: the person's remaining Exp(1) budget. ``inf`` when the rate is 0.
    """
    ep, a, b, log_hr = seg
    r = rate[ep] * np.exp(log_hr)
    last = ~np.isfinite(b)
    seg_h = np.where(last, 0.0, r * np.where(last, 0.0, b - a))
    cum = np.cumsum(seg_h)
    first = _group_first(ep)
    grp = np.cumsum(first) - 1
    cum_end = cum - (cum - seg_h)[first][grp]
    cum_start = cum_end - seg_h
    hit = last | (cum_end >= e[ep])
    idx = np.flatnonzero(hit)
    idx = idx[_group_first(ep[idx])]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = a[idx] + (e[ep[idx]] - cum_start[idx]) / r[idx]
    out = np.full(rate.size, np.inf)
    out[ep[idx]] = np.where(r[idx] > 0, t, np.inf)
    return out


# --------------------------------------------------------------------------------------
# Public function
# --------------------------------------------------------------------------------------


def simulate_cohort(
    n_patients: int,
    *,
    seed: int | np.random.Generator,
    start_date: str = "2018-01-01",
    end_date: str = "2023-12-31",
    n_programs: int = 4,
    effects: SimulationEffects | Mapping[str, Any] | None = None,
    progress: bool | None = None,
) -> IOPData:
    """Simulate an IOP cohort: the six canonical tables plus the latent truth.

    Parameters
    ----------
    n_patients : int
        Number of people (>= 1). Each has one or more episodes; about 1.2
        episodes per person with the defaults.
    seed : int or numpy.random.Generator
        Source of randomness; the same integer seed gives identical output.
    start_date, end_date : str, default "2018-01-01", "2023-12-31"
        Calendar window (inclusive, ISO dates). People enter uniformly over the
        window; nothing is recorded after ``end_date``.
    n_programs : int, default 4
        Number of programmes (sites), named "Site A", "Site B", ... (1-26).
        Site A is a standard IOP (group, education, individual; some family
        sessions), Site B adds holistic therapy, Site C is family-oriented,
        Site D runs long process groups; further sites repeat these templates.
        Every site schedules about 3 hours on 3 days a week (ASAM level 2.1).
    effects : SimulationEffects or mapping, optional
        Simulation parameters; ``None`` uses :data:`DEFAULT_EFFECTS`; a mapping
        overrides the named fields of the defaults.
    progress : bool, optional
        Show a tqdm progress bar; ``None`` (default) shows it when
        ``n_patients >= 20000``.

    Returns
    -------
    IOPData
        ``patients`` (patient_id, birth_year, sex, race, ethnicity);
        ``admissions`` (episode_id, patient_id, program, admit_date,
        discharge_date, discharge_reason, referral_source, primary_substance,
        psychiatric_comorbidity, prior_treatment_episodes, severity_score,
        housing, employment); ``sessions`` (patient_id, episode_id,
        session_date, modality, minutes, attended); ``medications``
        (patient_id, medication, dispense_date, days_supply, dose_mg);
        ``events`` (patient_id, event_date, event_type, result, substance);
        ``observation`` (patient_id, observation_end). Columns and order as in
        :data:`iop_research.data.schema.TABLE_COLUMNS`; ids are strings
        ("P000001", "E0000001"), dates ``datetime64[ns]`` at midnight,
        vocabularies plain strings from the schema enums, missing values
        ``None``/``NaT``. ``truth`` is a :class:`SimulationTruth`: the
        effects used; per episode the linear predictor, latent relapse time
        (days from admission, possibly beyond censoring), latent death time,
        latent discharge day and reason, observation end, aftercare interval;
        the exact MAT switch times (``truth.mat_intervals``); per person entry
        day, death day and observation end.

    Raises
    ------
    ModelSpecificationError
        If ``n_patients`` < 1, ``n_programs`` is outside 1-26, the window is
        empty or unparsable, ``seed`` is neither an integer nor a Generator, or
        ``effects`` names unknown parameters.

    Notes
    -----
    Relapse hazard of episode ``i`` at time ``t`` (days since admission)::

        h_i(t) = h0(t) * exp(x_i' beta + z_i(t)' gamma)  for t > blanking_days

    with log-logistic baseline ``H0(t) = log(1 + (t / alpha) ** k)`` and
    time-varying states ``z_i(t)``: in treatment, on MAT (for the episode's
    substance), in aftercare, and after a non-completed discharge. Because
    ``z_i`` is piecewise constant, the latent time solves ``H_i(T) = E`` with
    ``E ~ Exp(1)`` exactly, segment by segment [1]_ [4]_. The states do not depend
    on the relapse itself, so a counting-process Cox model with the right
    covariates (R: ``coxph(Surv(start, stop, event) ~ mat + ...)``) targets
    ``gamma``. MAT initiation is confounded by severity and comorbidity.
    Deaths are a competing event (a person-level baseline hazard multiplied by
    MAT coverage by medication and by post-stop windows, see
    :class:`SimulationEffects`); relapses after
    death or after observation end are latent only. Discharge shares and LOS
    follow TEDS-D IOP magnitudes [2]_; buprenorphine retention follows [3]_.

    References
    ----------
    .. [1] Hendry DJ. Data generation for the Cox proportional hazards model
       with time-dependent covariates: a method for medical researchers.
       Stat Med 2014;33:436-454.
    .. [2] SAMHSA. Treatment Episode Data Set (TEDS): Discharges from
       substance abuse treatment services, 2004.
    .. [3] Samples H, Williams AR, Olfson M, Crystal S. Risk factors for
       discontinuation of buprenorphine treatment for opioid use disorders in
       a multi-state sample of Medicaid enrollees. J Subst Abuse Treat
       2018;95:9-17.
    .. [4] Austin PC. Generating survival times to simulate Cox proportional
       hazards models with time-varying covariates. Stat Med
       2012;31:3946-3958.

    Examples
    --------
    >>> data = simulate_cohort(200, seed=1)
    >>> data.patients["patient_id"].iloc[0], len(data.patients)
    ('P000001', 200)
    >>> list(data.admissions.columns[:6])
    ['episode_id', 'patient_id', 'program', 'admit_date', 'discharge_date', 'discharge_reason']
    >>> round(data.truth.effects.log_hr_mat_opioid, 4)  # ln(0.5)
    -0.6931
    >>> list(data.truth.mat_intervals.columns)
    ['episode_id', 'patient_id', 'medication', 'start_day', 'stop_day']

    Same seed, same cohort; overriding one parameter:

    >>> simulate_cohort(50, seed=3).sessions.equals(simulate_cohort(50, seed=3).sessions)
    True
    >>> simulate_cohort(50, seed=3, effects={"log_hr_mat_opioid": 0.0}).truth.effects.log_hr_mat_opioid
    0.0
    """
    eff = _resolve_effects(effects)
    _check_tlfb_effects(eff)
    if isinstance(n_patients, bool) or not isinstance(n_patients, (int, np.integer)) or n_patients < 1:
        raise ModelSpecificationError(
            f"n_patients must be a positive integer, got {n_patients!r}. Pass e.g. n_patients=1000."
        )
    if isinstance(n_programs, bool) or not isinstance(n_programs, (int, np.integer)) or not 1 <= n_programs <= 26:
        raise ModelSpecificationError(
            f"n_programs must be an integer from 1 to 26, got {n_programs!r}. Pass e.g. n_programs=4."
        )
    bad_dates = ModelSpecificationError(
        f"start_date/end_date must be ISO dates such as '2018-01-01', got {start_date!r}, {end_date!r}."
    )
    try:
        t0 = pd.Timestamp(start_date).normalize()
        t1 = pd.Timestamp(end_date).normalize()
    except (ValueError, TypeError, AttributeError) as exc:  # AttributeError: NaT has no normalize()
        raise bad_dates from exc
    if pd.isna(t0) or pd.isna(t1):
        raise bad_dates
    if not isinstance(seed, (int, np.integer, np.random.Generator)) or isinstance(seed, bool):
        raise ModelSpecificationError(
            f"seed must be an int or a numpy.random.Generator, got {type(seed).__name__}. Pass e.g. seed=2024."
        )
    n_days = int((t1 - t0).days) + 1
    if n_days < 1:
        raise ModelSpecificationError(
            f"end_date {end_date!r} is before start_date {start_date!r}; pass a window of at least one day."
        )
    n = int(n_patients)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    show = (n >= 20000) if progress is None else bool(progress)
    bar = _Progress(show, total=8)
    try:
        data = _simulate(rng, n, n_days, t0, n_programs, eff, bar, seed)
    finally:
        bar.close()
    return _add_use_days(rng, data, eff) if eff.tlfb_share > 0 else data


def _simulate(rng, n, n_days, t0, n_programs, eff, bar, seed):
    templates = [_PROGRAM_TEMPLATES[k % 4] for k in range(n_programs)]
    program_names = [f"Site {chr(ord('A') + k)}" for k in range(n_programs)]
    program_p = np.array([tpl["weight"] for tpl in templates])

    pat = _draw_patients(rng, n, n_days, eff)
    age_rate = eff.log_hr_death_age_per_10_years * (pat["age_entry"] - 35.0) / 10.0
    # baseline (off-MAT) death hazard per day; MAT and post-stop windows multiply it on each
    # episode's timeline, and the person's Exp(1) budget is spent episode by episode
    death_rate = eff.death_rate_per_year / 365.25 * np.exp(
        age_rate + eff.log_hr_death_opioids * (pat["substance"] == _OPI)
    )
    death_left = rng.exponential(1.0, n)
    death_cont = np.full(n, np.inf)  # calendar, continuous; set from each person's last episode
    obs_end_alive = np.full(n, n_days - 1, dtype=np.int64)
    obs_end_alive = np.where(pat["lost"], np.minimum(obs_end_alive, pat["lost_day"]), obs_end_alive)
    entry_year = (np.datetime64(t0.date(), "D") + pat["entry"]).astype("datetime64[Y]").astype(np.int64) + 1970
    birth_year = (entry_year - np.floor(pat["age_entry"])).astype(np.int64)
    bar.step("people")

    # ---- episodes, round by round (readmissions start new episodes) -------------------
    rounds = []
    pidx = np.arange(n)
    admit = pat["entry"].astype(np.int64)
    prev = None
    carry = None
    post_carry = None
    # opt-in programme effects on completion: no draw at the default 0, so default cohorts are unchanged
    prog_u = rng.normal(0.0, eff.programme_completion_sd, n_programs) if eff.programme_completion_sd > 0 else None
    for _ in range(_MAX_READMISSION_ROUNDS):
        if pidx.size == 0:
            break
        ep = _simulate_round(rng, pat, pidx, admit, prev, carry, program_p, death_rate, death_left, obs_end_alive,
                             eff, prog_u, post_carry)
        rounds.append(ep)
        nxt = ep["readmit"]
        prev = {k: ep[k][nxt] for k in ("substance", "prior", "program")}
        rday = ep["relapse_day_obs"]
        last_ep = ~nxt
        death_cont[pidx[last_ep]] = ep["admit"][last_ep] + ep["death_t"][last_ep]
        death_left[pidx[nxt]] -= ep["death_h_readmit"][nxt]
        admit = ep["admit"][nxt] + rday[nxt]
        pidx = ep["pidx"][nxt]
        carry = _carry_over(ep, nxt, rday)
        post_carry = _post_stop_carry(ep, nxt, rday)
    if pidx.size:  # readmissions beyond the round limit: the rest of the budget at the off-MAT rate
        with np.errstate(divide="ignore"):
            death_cont[pidx] = admit + death_left[pidx] / death_rate[pidx]
    bar.step("episodes")
    death_day = np.ceil(death_cont)
    dead_obs = death_day <= obs_end_alive
    obs_end = np.where(dead_obs, np.where(dead_obs, death_day, 0).astype(np.int64), obs_end_alive)
    ep = {k: np.concatenate([r[k] for r in rounds]) for k in rounds[0]
          if k not in ("mat_rows", "mat_int", "carry_int", "post_stops")}
    n_ep = ep["pidx"].size
    order = np.lexsort((ep["admit"], ep["pidx"]))
    rank = np.empty(n_ep, dtype=np.int64)
    rank[order] = np.arange(n_ep)
    ep = {k: v[order] for k, v in ep.items()}
    # next admission of the same person (cuts MAT and aftercare), in days from admission
    same_next = np.zeros(n_ep, dtype=bool)
    same_next[:-1] = ep["pidx"][1:] == ep["pidx"][:-1]
    next_admit_off = np.full(n_ep, np.inf)
    next_admit_off[:-1] = np.where(same_next[:-1], (ep["admit"][1:] - ep["admit"][:-1]).astype(float), np.inf)

    # MAT rows from all rounds, re-indexed to the sorted episode order
    offs = np.cumsum([0] + [r["pidx"].size for r in rounds[:-1]])
    mr = [np.concatenate([r["mat_rows"][i] + (o if i == 0 else 0) for r, o in zip(rounds, offs)]) for i in range(3)]
    mi = [np.concatenate([r["mat_int"][i] + (o if i == 0 else 0) for r, o in zip(rounds, offs)]) for i in range(4)]
    disp_ep, disp_day, disp_sup = rank[mr[0]], mr[1], mr[2]
    int_ep, int_start, int_stop, int_med = rank[mi[0]], mi[1], mi[2], mi[3]

    pid_str = np.array([f"P{i + 1:06d}" for i in range(n)], dtype=object)
    eid_str = np.array([f"E{i + 1:07d}" for i in range(n_ep)], dtype=object)
    base = np.datetime64(t0.date(), "D")

    def to_dates(day_index):
        return (base + np.asarray(day_index, dtype=np.int64)).astype("datetime64[ns]")

    ep_obs_end_off = obs_end[ep["pidx"]] - ep["admit"]
    bar.step("latent times")

    # ---- patients, observation ------------------------------------------------------
    patients = _frame("patients", {
        Col.patient_id: pid_str,
        Col.birth_year: birth_year,
        Col.sex: np.array(_SEX, dtype=object)[pat["sex"]],
        Col.race: pat["race"],
        Col.ethnicity: pat["ethnicity"],
    })
    observation = _frame("observation", {Col.patient_id: pid_str, Col.observation_end: to_dates(obs_end)})

    # ---- admissions ------------------------------------------------------------------
    los_obs = ep["los_obs"]
    discharged = los_obs <= ep_obs_end_off
    dis_dates = np.where(discharged, to_dates(ep["admit"] + los_obs), np.datetime64("NaT", "ns"))
    reason = np.array(_REASONS, dtype=object)[ep["reason_obs"]]
    reason = np.where(discharged, reason, None)
    admissions = _frame("admissions", {
        Col.episode_id: eid_str,
        Col.patient_id: pid_str[ep["pidx"]],
        Col.program: np.array(program_names, dtype=object)[ep["program"]],
        Col.admit_date: to_dates(ep["admit"]),
        Col.discharge_date: dis_dates,
        Col.discharge_reason: reason,
        Col.referral_source: np.array(_REFERRALS, dtype=object)[ep["referral"]],
        Col.primary_substance: np.array(_SUBSTANCES, dtype=object)[ep["substance"]],
        Col.psychiatric_comorbidity: ep["comorbid"].astype(bool),
        Col.prior_treatment_episodes: ep["prior"].astype(np.int64),
        Col.severity_score: ep["sev"].astype(float),
        Col.housing: np.array(_HOUSING, dtype=object)[ep["housing"]],
        Col.employment: np.array(_EMPLOYMENT, dtype=object)[ep["employment"]],
    })
    bar.step("admissions")

    # ---- sessions ----------------------------------------------------------------------
    sessions = _build_sessions(rng, ep, templates, ep_obs_end_off, pid_str, eid_str, base, to_dates)
    bar.step("sessions")

    # ---- medications -------------------------------------------------------------------
    horizon = np.minimum(next_admit_off, ep_obs_end_off.astype(float))
    cut_disp = disp_day < next_admit_off[disp_ep]
    # coverage (truth) cut at the next admission; what is left of a supply on that day
    # is the next episode's carried-over interval starting on its day 0
    keep_int = int_start < next_admit_off[int_ep]
    int_ep, int_start, int_stop, int_med = (int_ep[keep_int], int_start[keep_int], int_stop[keep_int],
                                            int_med[keep_int])
    int_stop = np.minimum(int_stop, next_admit_off[int_ep]).astype(np.int64)
    shown = cut_disp & (disp_day <= horizon[disp_ep])
    d_ep, d_day, d_sup = disp_ep[shown], disp_day[shown], disp_sup[shown]
    d_med = ep["mat_med"][d_ep]
    d_abs = ep["admit"][d_ep] + d_day
    o = np.lexsort((d_med, d_abs, ep["pidx"][d_ep]))
    d_ep, d_abs, d_sup, d_med = d_ep[o], d_abs[o], d_sup[o], d_med[o]
    medications = _frame("medications", {
        Col.patient_id: pid_str[ep["pidx"][d_ep]],
        Col.medication: np.array(_MEDS, dtype=object)[d_med],
        Col.dispense_date: to_dates(d_abs),
        Col.days_supply: d_sup.astype(np.int64),
        Col.dose_mg: ep["mat_dose"][d_ep].astype(float),
    })
    bar.step("medications")

    # ---- events ------------------------------------------------------------------------
    events, (m_ep, m_off, m_pos) = _build_events(rng, ep, ep_obs_end_off, next_admit_off, pid_str, obs_end, death_day,
                                                 dead_obs, to_dates, eff)
    bar.step("events")

    # ---- truth ---------------------------------------------------------------------------
    med_names = np.array(_MEDS + [None], dtype=object)
    truth_eps = pd.DataFrame({
        Col.episode_id: eid_str,
        Col.patient_id: pid_str[ep["pidx"]],
        Col.primary_substance: admissions[Col.primary_substance].to_numpy(),
        "linear_predictor": ep["lp"],
        "relapse_day": ep["relapse_t"],
        "death_day": death_cont[ep["pidx"]] - ep["admit"],
        "discharge_day": ep["los_obs"],
        "discharge_reason": np.array(_REASONS, dtype=object)[ep["reason_obs"]],
        "observation_end_day": ep_obs_end_off,
        "is_relapse_observed": ep["relapse_observed"],
        "relapse_in_treatment": ep["relapse_in_tx"],
        "mat_medication": med_names[ep["mat_med"]],
        "aftercare_start_day": ep["aft_start"],
        "aftercare_stop_day": np.minimum(ep["aft_stop"], next_admit_off),
    })
    mat_intervals = pd.DataFrame({
        Col.episode_id: eid_str[int_ep],
        Col.patient_id: pid_str[ep["pidx"][int_ep]],
        Col.medication: med_names[int_med],
        "start_day": int_start.astype(np.int64),
        "stop_day": int_stop.astype(np.int64),
    }).sort_values([Col.episode_id, "start_day"], kind="stable").reset_index(drop=True)
    truth_pat = pd.DataFrame({
        Col.patient_id: pid_str,
        "entry_day": pat["entry"].astype(np.int64),
        "death_day": death_cont,
        "death_rate_per_day": death_rate,
        "observation_end_day": obs_end,
        "is_lost_to_followup": pat["lost"] & (pat["lost_day"] < n_days - 1) & ~dead_obs,
    })
    params = {
        "seed": seed if isinstance(seed, (int, np.integer)) else None,
        "n_patients": n,
        "start_date": str(t0.date()),
        "end_date": str((t0 + pd.Timedelta(days=n_days - 1)).date()),
        "programs": {name: {"weekdays": tpl["weekdays"], "slots": tpl["slots"], "family_share": tpl["family_share"]}
                     for name, tpl in zip(program_names, templates)},
        "time_origin": "admission; latent time t is recorded on day admit_date + ceil(t)",
    }
    if prog_u is not None:
        params["programme_completion_effects"] = dict(zip(program_names, prog_u.tolist()))
    missed_screens = pd.DataFrame({Col.episode_id: eid_str[m_ep], Col.patient_id: pid_str[ep["pidx"][m_ep]],
                                   "day": m_off.astype(np.int64), "would_be_positive": m_pos.astype(bool)})
    c_ep, c_w = np.nonzero(np.ones(ep["conf_L"].shape, dtype=bool))
    confounder = pd.DataFrame({Col.episode_id: eid_str[c_ep], Col.patient_id: pid_str[ep["pidx"][c_ep]],
                               "week": c_w.astype(np.int64), "day": 7 * c_w.astype(np.int64),
                               "value": ep["conf_L"][c_ep, c_w], "on_mat": ep["conf_on"][c_ep, c_w],
                               "moud_started_by_confounder": ep["conf_started"][c_ep] == c_w})
    truth = SimulationTruth(effects=eff, params=params, episodes=truth_eps, mat_intervals=mat_intervals,
                            patients=truth_pat, missed_screens=missed_screens, confounder=confounder)
    bar.step("truth")
    return IOPData(patients=patients, admissions=admissions, sessions=sessions, medications=medications,
                   events=events, observation=observation, truth=truth)


def _carry_over(ep, nxt, rday):
    """Supplies dispensed before a readmission day that still cover it.

    Returns (position among the readmitted, medication code, days left from
    the new admission) for the next round.
    """
    c, d, s = ep["mat_rows"]
    cc, cmed, cstop = ep["carry_int"]
    own = nxt[c] & (d < rday[c])
    ep_idx = np.concatenate([c[own], cc[nxt[cc]]])
    end = np.concatenate([(d + s)[own], cstop[nxt[cc]]])
    med = np.concatenate([ep["mat_med"][c[own]], cmed[nxt[cc]]])
    left = end - rday[ep_idx]
    keep = left > 0
    ep_idx, left, med = ep_idx[keep], left[keep], med[keep]
    new_pos = np.cumsum(nxt) - 1
    # one interval per episode and medication: the longest remaining supply
    order = np.lexsort((-left, med, ep_idx))
    ep_idx, left, med = ep_idx[order], left[order], med[order]
    first = np.ones(ep_idx.size, dtype=bool)
    first[1:] = (ep_idx[1:] != ep_idx[:-1]) | (med[1:] != med[:-1])
    return new_pos[ep_idx[first]], med[first], left[first].astype(np.int64)


def _post_stop_carry(ep, nxt, rday):
    """Post-stop death windows still open on a readmission day.

    Returns (position among the readmitted, medication code, stop day relative
    to the new admission, <= 0) for methadone / buprenorphine intervals that
    ended in the 28 days up to the readmission day.
    """
    e, stop, med = ep["post_stops"]
    rel = stop - rday[e]
    keep = nxt[e] & (rel <= 0) & (rel > -_DEATH_POST_LATE_DAYS)
    new_pos = np.cumsum(nxt) - 1
    return new_pos[e[keep]], med[keep], rel[keep]


def _simulate_round(rng, pat, pidx, admit, prev, carry, program_p, death_rate, death_left, obs_end_alive, eff,
                    prog_u=None, post_carry=None, draw_mat=_draw_mat,
                    draw_dispensings=_draw_dispensings):
    """One round of episodes (first episodes, or readmissions) for persons ``pidx``.

    ``carry``: (episode position, medication code, days) of supplies dispensed in
    the previous episode that still cover the first days of the new one;
    ``post_carry``: (episode position, medication code, stop day <= 0) of
    post-stop death windows still open at admission. ``death_left``: each
    person's remaining Exp(1) death budget; ``obs_end_alive``: observation end
    (calendar day) ignoring death. ``draw_mat``, ``draw_dispensings``: the MAT steps
    (hooks for :func:`strategy_risks`, which forces MAT start or stop times by a strategy).
    """
    m = pidx.size
    cov = _draw_episode_covariates(rng, pat, pidx, prev, program_p)
    age = pat["age_entry"][pidx] + (admit - pat["entry"][pidx]) / 365.25
    female = pat["sex"][pidx] == 1
    sub = cov["substance"]
    sub_beta = np.array([eff.log_hr_opioids, 0.0, eff.log_hr_stimulants, eff.log_hr_cannabis,
                         eff.log_hr_sedatives, eff.log_hr_other_substance])
    hous_beta = np.array([0.0, eff.log_hr_housing_unstable, eff.log_hr_housing_homeless])
    lp = (eff.log_hr_severity_per_point * (cov["sev"] - 5.0)
          + eff.log_hr_psychiatric_comorbidity * cov["comorbid"]
          + eff.log_hr_prior_episode * np.minimum(cov["prior"], 5)
          + eff.log_hr_age_per_10_years * (age - 35.0) / 10.0
          + eff.log_hr_female * female
          + hous_beta[cov["housing"]]
          + eff.log_hr_unemployed * (cov["employment"] == 1)
          + eff.log_hr_residential_step_down * (cov["referral"] == _REF_STEP_DOWN)
          + sub_beta[sub])
    reason, los = _draw_discharge(rng, cov, eff, prog_u)

    med, mstart, mdur = draw_mat(rng, cov, eff)
    dose = _draw_doses(rng, med)
    c, d, s = draw_dispensings(rng, med, mstart, mdur, eff)
    iv = _coverage_intervals(c, d, s)
    int_ep, int_start, int_stop = iv[0], iv[1], iv[2]
    int_med = med[int_ep]
    if carry is not None and carry[0].size:
        int_ep = np.concatenate([carry[0], int_ep])
        int_start = np.concatenate([np.zeros(carry[0].size, dtype=np.int64), int_start])
        int_stop = np.concatenate([carry[2].astype(np.int64), int_stop])
        int_med = np.concatenate([carry[1], int_med])
    conf_L = np.zeros((m, 0), dtype=bool)
    conf_on = np.zeros((m, 0), dtype=bool)
    conf_started = np.full(m, -1, dtype=np.int64)
    if eff.confounder_weeks > 0:  # opt-in: no draws otherwise, so default cohorts are unchanged
        med, mstart, mdur, dose, (c, d, s), (int_ep, int_start, int_stop, int_med), conf_L, conf_on, conf_started = (
            _simulate_confounder(rng, cov, med, mstart, mdur, dose, (c, d, s),
                                 (int_ep, int_start, int_stop, int_med), eff))
    mat_beta = np.where(sub == _OPI, eff.log_hr_mat_opioid, np.where(sub == _ALC, eff.log_hr_mat_alcohol, 0.0))

    # death: exact inversion of the person's remaining budget on this episode's MAT timeline
    agonist = np.isin(int_med, (_M_MET, _M_BUP))
    post_ep, post_stop, post_med = int_ep[agonist], int_stop[agonist].astype(float), int_med[agonist]
    if post_carry is not None and post_carry[0].size:
        post_ep = np.concatenate([post_carry[0], post_ep])
        post_med = np.concatenate([post_carry[1], post_med])
        post_stop = np.concatenate([post_carry[2].astype(float), post_stop])
    seg = _death_segments(m, int_ep, int_start.astype(float), int_stop.astype(float), int_med,
                          post_ep, post_stop, post_med, eff)
    rate = death_rate[pidx]
    t_death = _invert_death(seg, rate, death_left[pidx])  # continuous, > 0
    died_in_tx = t_death < los
    los_obs = np.where(died_in_tx, np.maximum(1, np.ceil(t_death)), los).astype(np.int64)
    reason_obs = np.where(died_in_tx, _R_DEATH, reason)
    noncompleted = ~np.isin(reason_obs, [_R_COMPLETED, _R_TRANSFERRED])

    p_aft = np.where(reason_obs == _R_COMPLETED, eff.aftercare_share_completed, eff.aftercare_share_other)
    has_aft = (rng.random(m) < p_aft) & ~died_in_tx
    aft_start = np.where(has_aft, los_obs + rng.integers(1, 15, m), np.nan)
    aft_stop = aft_start + np.maximum(1.0, np.ceil(rng.exponential(eff.aftercare_mean_days, m)))

    relapse_t = _simulate_relapse(rng, m, lp, los_obs, noncompleted, mat_beta, int_ep, int_start.astype(float),
                                  int_stop.astype(float), aft_start, aft_stop, eff, conf=conf_L)
    relapse_day = np.ceil(relapse_t)
    obs_off = obs_end_alive[pidx] - admit  # death is handled by relapse_t < t_death
    observed = (relapse_t < t_death) & (relapse_day <= obs_off)
    in_tx = relapse_t < los_obs
    # manifestation after discharge: 0 self-report, 1 ED visit, 2 overdose, 3 readmission
    r = eff.readmission_share
    p_opi = np.array([0.40, 0.15, 0.15, 0.0])
    p_oth = np.array([0.47, 0.20, 0.03, 0.0])
    p_man = np.where((sub == _OPI)[:, None], p_opi, p_oth)
    p_man = p_man / p_man.sum(axis=1, keepdims=True) * (1 - r)
    p_man[:, 3] = r
    manifest = _choice(rng, p_man, m)
    # a readmission needs the person alive on the next day: otherwise the relapse is an ED visit
    manifest = np.where((manifest == 3) & ~(relapse_day < t_death), 1, manifest)
    readmit = observed & ~in_tx & (manifest == 3)
    return dict(
        pidx=pidx, admit=admit.astype(np.int64), lp=lp, reason_obs=reason_obs, los_obs=los_obs,
        sev=cov["sev"], housing=cov["housing"], employment=cov["employment"], referral=cov["referral"],
        substance=sub, prior=cov["prior"], program=cov["program"], comorbid=cov["comorbid"],
        mat_med=med, mat_dose=dose, relapse_t=relapse_t,
        relapse_day_obs=np.where(np.isfinite(relapse_day), relapse_day, -1).astype(np.int64),
        relapse_observed=observed, relapse_in_tx=in_tx & observed, manifest=manifest, readmit=readmit,
        aft_start=aft_start, aft_stop=aft_stop, family=rng.random(m), attend_level=rng.beta(12, 1.6, m),
        mat_rows=(c, d, s), mat_int=(int_ep, int_start, int_stop, int_med),
        carry_int=carry if carry is not None else (np.zeros(0, np.int64),) * 3,
        death_t=t_death, post_stops=(post_ep, post_stop, post_med),
        conf_L=conf_L, conf_on=conf_on, conf_started=conf_started,
        death_h_readmit=_death_cumhaz(seg, rate, np.where(readmit, relapse_day, 0.0)),
    )


def _weekly_cycles(templates):
    """Per programme and weekday of admission: one week of sessions as (day offset, modality, minutes).

    Returns arrays ``offset, modality, minutes`` of shape (programmes, 7, k_max)
    and ``k`` (sessions per full week of each programme).
    """
    k = np.array([sum(len(sl) for sl in tpl["slots"]) for tpl in templates])
    shape = (len(templates), 7, int(k.max()))
    offset = np.full(shape, 10**6, dtype=np.int64)
    modality = np.zeros(shape, dtype=np.int64)
    minutes = np.zeros(shape, dtype=np.int64)
    for p, tpl in enumerate(templates):
        week = [(wd, _MOD[mod], mins) for wd, slot in zip(tpl["weekdays"], tpl["slots"]) for mod, mins in slot]
        for w0 in range(7):
            rows = sorted(((wd - w0) % 7, i, mod, mins) for i, (wd, mod, mins) in enumerate(week))
            for j, (off, _i, mod, mins) in enumerate(rows):
                offset[p, w0, j], modality[p, w0, j], minutes[p, w0, j] = off, mod, mins
    return offset, modality, minutes, k


def _build_sessions(rng, ep, templates, ep_obs_end_off, pid_str, eid_str, base, to_dates):
    """Scheduled sessions from admission to discharge (or observation end).

    Each programme repeats a weekly timetable; an episode gets every session
    of its programme's timetable on days 0..last of the episode.
    """
    n_days = np.minimum(ep["los_obs"], ep_obs_end_off) + 1
    prog = ep["program"]
    w0 = ((base + ep["admit"]).astype("datetime64[D]").view("int64") + 3) % 7  # 1970-01-01 was a Thursday
    cyc_off, cyc_mod, cyc_min, k = _weekly_cycles(templates)
    owner, j = _ragged(-(-n_days // 7) * k[prog])
    kk = k[prog[owner]]
    week, pos = j // kk, j % kk
    cell = (prog * 7 + w0)[owner] * cyc_off.shape[2] + pos  # flat index into the (programme, weekday, k) cycles
    s_off = 7 * week + cyc_off.ravel()[cell]
    mod = cyc_mod.ravel()[cell]
    fam_share = np.array([tpl["family_share"] for tpl in templates])
    keep = (s_off < n_days[owner]) & (
        (mod != _MOD["family"]) | (ep["family"][owner] < fam_share[prog[owner]]))
    s_ep, s_off, mod, minutes = owner[keep], s_off[keep], mod[keep], cyc_min.ravel()[cell[keep]]
    del owner, j, kk, week, pos, cell, keep
    # attendance: episode level, falling in the three weeks before a drop-out / termination
    p = ep["attend_level"][s_ep]
    to_end = ep["los_obs"][s_ep] - s_off
    leaving = (ep["reason_obs"] == _R_DROPPED) | (ep["reason_obs"] == _R_TERMINATED)
    p = np.where(leaving[s_ep] & (to_end < 21), p * (0.35 + 0.65 * to_end / 21.0), p)
    attended = rng.random(s_ep.size) < p
    del p, to_end
    return _frame("sessions", {
        Col.patient_id: pid_str[ep["pidx"][s_ep]],
        Col.episode_id: eid_str[s_ep],
        Col.session_date: to_dates(ep["admit"][s_ep] + s_off),
        Col.modality: np.array(_MODALITIES, dtype=object)[mod],
        Col.minutes: minutes,
        Col.attended: attended,
    })


def _build_events(rng, ep, ep_obs_end_off, next_admit_off, pid_str, obs_end, death_day, dead_obs, to_dates, eff):
    """Urine screens, relapse manifestations, aftercare contacts and deaths."""
    subst = np.array(_SUBSTANCES, dtype=object)
    # weekly UDS in treatment: days 0, 7, 14, ... up to discharge (or observation end)
    last_off = np.minimum(ep["los_obs"], ep_obs_end_off)
    n_uds = last_off // 7 + 1
    u_ep, k = _ragged(n_uds)
    u_off = 7 * k
    rel_day = ep["relapse_day_obs"]
    rel_tx = ep["relapse_in_tx"]
    after = rel_tx[u_ep] & (u_off > rel_day[u_ep])
    u = rng.random(u_ep.size)
    positive = np.where(u_off == 0, u < eff.intake_positive_share,
                        np.where(u_off <= eff.blanking_days, u < 0.15,
                                 after & (u < eff.positive_after_relapse_share)))
    keep = ~(rel_tx[u_ep] & (u_off == rel_day[u_ep]))  # the relapse-day screen is added below
    u_ep, u_off, positive = u_ep[keep], u_off[keep], positive[keep]
    missed = np.zeros(u_ep.size, dtype=bool)
    if eff.missed_screen_share > 0:  # opt-in: no draws otherwise, so default cohorts are unchanged
        base = eff.missed_screen_share / (1.0 - eff.missed_screen_share) if eff.missed_screen_share < 1 else np.inf
        odds = np.where(rel_tx[u_ep] & (u_off > rel_day[u_ep]), base * eff.missed_screen_odds_after_relapse, base)
        missed = (u_off > 0) & (rng.random(u_ep.size) < odds / (1.0 + odds))
    missed_truth = (u_ep[missed], u_off[missed], positive[missed])
    r_ep = np.flatnonzero(rel_tx)
    uds_ep = np.concatenate([u_ep, r_ep])
    uds_off = np.concatenate([u_off, rel_day[r_ep]])
    uds_pos = np.concatenate([positive, np.ones(r_ep.size, dtype=bool)])
    uds_missed = np.concatenate([missed, np.zeros(r_ep.size, dtype=bool)])
    # relapse after discharge: 0 self-report, 1 ED visit, 2 overdose, 3 readmission
    post = np.flatnonzero(ep["relapse_observed"] & ~ep["relapse_in_tx"])
    # aftercare contacts: about every 14 days during engagement
    a_ep = np.flatnonzero(np.isfinite(ep["aft_start"]))
    start = ep["aft_start"][a_ep]
    stop = np.minimum(ep["aft_stop"][a_ep], next_admit_off[a_ep])
    n_c = np.maximum(0, np.floor((stop - 1 - start) / 14.0).astype(np.int64) + 1)
    c_own, kk = _ragged(n_c)
    c_ep = a_ep[c_own]
    c_off = (start[c_own] + 14 * kk + rng.integers(-2, 3, c_own.size)).astype(np.int64)
    c_off = np.maximum(c_off, ep["los_obs"][c_ep] + 1)
    ok = (c_off <= ep_obs_end_off[c_ep]) & (c_off < next_admit_off[c_ep])
    c_ep, c_off = c_ep[ok], c_off[ok]
    dead = np.flatnonzero(dead_obs)
    # event type codes in EventType order
    code = {v: i for i, v in enumerate(EventType.values())}
    t_uds, t_death, t_aft = code["uds"], code["death"], code["aftercare_contact"]
    manifest_type = np.array([code["self_report_use"], code["ed_visit"], code["overdose"], code["readmission"]])
    none = np.array([None], dtype=object)
    parts = [
        # (person, calendar day, type code, result, substance)
        (ep["pidx"][uds_ep], ep["admit"][uds_ep] + uds_off, np.full(uds_ep.size, t_uds),
         np.where(uds_missed, UdsResult.missed.value,
                  np.where(uds_pos, UdsResult.positive.value, UdsResult.negative.value)).astype(object),
         np.where(uds_pos & ~uds_missed, subst[ep["substance"][uds_ep]], None)),
        (ep["pidx"][post], ep["admit"][post] + rel_day[post], manifest_type[ep["manifest"][post]],
         np.repeat(none, post.size), subst[ep["substance"][post]]),
        (ep["pidx"][c_ep], ep["admit"][c_ep] + c_off, np.full(c_ep.size, t_aft),
         np.repeat(none, c_ep.size), np.repeat(none, c_ep.size)),
        (dead, death_day[dead].astype(np.int64), np.full(dead.size, t_death),
         np.repeat(none, dead.size), np.repeat(none, dead.size)),
    ]
    pidx, day, etype, result, substance = (np.concatenate([p[i] for p in parts]) for i in range(5))
    order = np.lexsort((etype, day, pidx))
    events = _frame("events", {
        Col.patient_id: pid_str[pidx[order]],
        Col.event_date: to_dates(day[order]),
        Col.event_type: np.array(EventType.values(), dtype=object)[etype[order]],
        Col.result: result[order],
        Col.substance: substance[order],
    })
    m_ep, m_off, m_pos = missed_truth
    return events, (m_ep, m_off, m_pos)


_KIND_DTYPE = {"id": object, "str": object, "int": np.int64, "float": np.float64, "bool": bool,
               "date": "datetime64[ns]"}


def _frame(table: str, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """One contract table from arrays: contract column order, contract dtypes, RangeIndex.

    Text columns (ids, vocabularies, free text) are object arrays of ``str``
    with ``None`` for missing; dates are ``datetime64[ns]`` with ``NaT``.
    """
    spec = TABLE_COLUMNS[table]
    data = {}
    for col, kind, _nullable, _meaning in spec:
        dtype = _KIND_DTYPE.get(kind, object)
        data[col] = np.asarray(columns[col]).astype(dtype, copy=False)
    return pd.DataFrame(data, columns=[c[0] for c in spec])


# --------------------------------------------------------------------------------------
# Marginal rates (used by tests and benchmarks/synth_marginals.py)
# --------------------------------------------------------------------------------------

#: name -> (design-brief target, lowest accepted, highest accepted)
_MARGINAL_TARGETS: dict[str, tuple[float, float, float]] = {
    "share_completed": (0.38, 0.35, 0.41),
    "share_transferred": (0.18, 0.15, 0.21),
    "share_dropped_out": (0.23, 0.20, 0.26),
    "share_terminated": (0.14, 0.11, 0.17),
    "median_los_days": (41.0, 36.0, 46.0),
    "median_los_completed_days": (50.0, 45.0, 55.0),
    "median_los_dropped_out_days": (26.0, 21.0, 31.0),
    "share_opioid_episodes_on_mat": (0.50, 0.43, 0.57),
    "relapse_1y_km": (0.50, 0.40, 0.60),
    "bup_stop_30d": (0.28, 0.21, 0.35),
    "bup_stop_180d": (0.60, 0.52, 0.68),
}


def _km_event_probability(time: np.ndarray, event: np.ndarray, at: float) -> float:
    """1 - Kaplan-Meier survival at ``at`` (events before censorings at tied times)."""
    order = np.lexsort((~event, time))
    time, event = time[order], event[order]
    n = time.size
    at_risk = n - np.arange(n)
    use = event & (time <= at)
    surv = np.prod(1.0 - 1.0 / at_risk[use]) if use.any() else 1.0
    return float(1.0 - surv)


def _marginal_rates(data: IOPData, *, grace_days: int = 30) -> dict[str, float]:
    """Marginal rates of a simulated cohort, to compare with :data:`_MARGINAL_TARGETS`.

    Discharge shares and LOS use discharged episodes; the MAT share counts
    opioid episodes with an opioid-MAT dispensing within 60 days of admission
    (episodes observed for 60 days); the 1-year relapse probability is a
    Kaplan-Meier estimate on the latent relapse times censored at death and
    observation end; buprenorphine stops use eras (dispensings joined when at
    most ``grace_days`` apart) that start at least 180 days before the
    person's observation end: share of eras lasting at most 30 days and less
    than 180 days.
    """
    adm = data.admissions
    dis = adm[adm[Col.discharge_date].notna()]
    reason = dis[Col.discharge_reason]
    los = (dis[Col.discharge_date] - dis[Col.admit_date]).dt.days
    out = {
        "share_completed": float((reason == "completed").mean()),
        "share_transferred": float((reason == "transferred").mean()),
        "share_dropped_out": float((reason == "dropped_out").mean()),
        "share_terminated": float((reason == "terminated").mean()),
        "median_los_days": float(los.median()),
        "median_los_completed_days": float(los[reason == "completed"].median()),
        "median_los_dropped_out_days": float(los[reason == "dropped_out"].median()),
    }
    obs = data.observation.set_index(Col.patient_id)[Col.observation_end]
    opi = adm[adm[Col.primary_substance] == "opioids"]
    opi = opi[opi[Col.admit_date] + pd.Timedelta(days=60) <= opi[Col.patient_id].map(obs)]
    meds = data.medications
    om = meds[meds[Col.medication].isin(["buprenorphine", "methadone", "naltrexone_xr"])]
    j = opi[[Col.episode_id, Col.patient_id, Col.admit_date]].merge(
        om[[Col.patient_id, Col.dispense_date]], on=Col.patient_id
    )
    lag = (j[Col.dispense_date] - j[Col.admit_date]).dt.days
    on_mat = set(j.loc[(lag >= 0) & (lag <= 60), Col.episode_id])
    out["share_opioid_episodes_on_mat"] = float(opi[Col.episode_id].isin(on_mat).mean())
    te = data.truth.episodes
    t = np.minimum(te["relapse_day"], np.minimum(te["death_day"], te["observation_end_day"])).to_numpy()
    out["relapse_1y_km"] = _km_event_probability(t, te["is_relapse_observed"].to_numpy(), 365.0)
    b = meds[meds[Col.medication] == "buprenorphine"].sort_values([Col.patient_id, Col.dispense_date])
    start = b[Col.dispense_date].to_numpy()
    end = start + b[Col.days_supply].to_numpy().astype("timedelta64[D]")
    pid = b[Col.patient_id].to_numpy()
    new = np.ones(len(b), dtype=bool)
    if len(b) > 1:
        run_end = pd.Series(end).groupby(pid).cummax().to_numpy()
        new[1:] = (pid[1:] != pid[:-1]) | (start[1:] > run_end[:-1] + np.timedelta64(grace_days, "D"))
    era = np.cumsum(new)
    eras = pd.DataFrame({"era": era, Col.patient_id: pid, "start": start, "end": end}).groupby("era").agg(
        patient_id=(Col.patient_id, "first"), start=("start", "min"), end=("end", "max")
    )
    eras = eras[eras["start"] + pd.Timedelta(days=180) <= eras[Col.patient_id].map(obs)]
    length = (eras["end"] - eras["start"]).dt.days
    out["bup_stop_30d"] = float((length <= 30).mean())
    out["bup_stop_180d"] = float((length < 180).mean())
    return out


# --------------------------------------------------------------------------------------
# Counterfactual risks of treatment strategies (the truth of target trial emulations)
# --------------------------------------------------------------------------------------

#: Strategies of :func:`strategy_risks` (time zero in brackets): "natural" (admission),
#: "start" and "no_start" (admission; :func:`~iop_research.designs.clone_censor_weight`),
#: "sustain" and "stop" (MOUD start; :func:`~iop_research.designs.sustained_treatment`).
STRATEGY_NAMES = ("natural", "start", "no_start", "sustain", "stop")
_STRATEGY_MAX_REDRAWS = 2000


def _whole_days_argument(value, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ModelSpecificationError(
            f"strategy_risks: {name} must be a whole number of days >= {minimum}, got {value!r}."
        )
    return int(value)


def _strategy_population(rng, n, eff):
    """People of ``n`` opioid index episodes (first episodes of people whose substance is opioids)."""
    parts, got = [], 0
    while got < n:
        k = int((n - got) / max(_SUBSTANCE_P[_OPI], 1e-9) * 1.2) + 100
        pat = _draw_patients(rng, k, 1, eff)
        keep = np.flatnonzero(pat["substance"] == _OPI)[: n - got]
        parts.append({key: v[keep] for key, v in pat.items()})
        got += keep.size
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _redraw_until(name, bad, redraw):
    """Call ``redraw(index)`` (returns the rows still failing among ``index``) until no row fails."""
    for _ in range(_STRATEGY_MAX_REDRAWS):
        if not bad.any():
            return
        idx = np.flatnonzero(bad)
        bad[idx] = redraw(idx)
    raise ModelSpecificationError(
        f"strategy_risks: strategy {name!r}: {int(bad.sum())} index episode(s) still do not follow the strategy after "
        f"{_STRATEGY_MAX_REDRAWS} draws from the natural law; under these effects the strategy has (almost) no "
        "probability for them (positivity). Widen the grace period or change the MAT parameters."
    )


def _start_strategy_mat(name, grace, redraw_rng):
    """``draw_mat`` hook: natural MAT draws conditional on starting (or not) on a day ``<= grace``."""
    want = name == "start"

    def draw(rng, cov, eff):
        med, start, dur = _draw_mat(rng, cov, eff)

        def redraw(idx):
            m2, s2, d2 = _draw_mat(redraw_rng, {k: v[idx] for k, v in cov.items()}, eff)
            med[idx], start[idx], dur[idx] = m2, s2, d2
            return ((m2 >= 0) & (s2 <= grace)) != want

        _redraw_until(name, ((med >= 0) & (start <= grace)) != want, redraw)
        return med, start, dur

    return draw


def _course_stop_day(c, d, s, start, m):
    """Days from the course start to the end of its last supply (-1 without a course)."""
    end = np.full(m, -1, dtype=np.int64)
    np.maximum.at(end, c, d + s)
    return np.where(end >= 0, end - start, -1)


def _sustain_strategy_hooks(name, sustain_days, stop_grace, redraw_rng):
    """``draw_mat``/``draw_dispensings`` hooks: natural courses conditional on their stop day."""
    seen = {}

    def ok(stop_day):
        return stop_day > sustain_days if name == "sustain" else stop_day <= stop_grace

    def draw_mat(rng, cov, eff):
        seen["cov"] = cov
        return _draw_mat(rng, cov, eff)

    def draw_dispensings(rng, med, start, dur, eff):
        c, d, s = _draw_dispensings(rng, med, start, dur, eff)
        rows = [(c, d, s)]
        drop = np.zeros(med.size, dtype=bool)  # courses whose first draw is replaced
        new = []

        def redraw(idx):
            dur2 = _draw_mat(redraw_rng, {k: v[idx] for k, v in seen["cov"].items()}, eff)[2]
            c2, d2, s2 = _draw_dispensings(redraw_rng, med[idx], start[idx], dur2, eff)
            stop2 = _course_stop_day(c2, d2, s2, start[idx], idx.size)
            good = ok(stop2)
            sel = good[c2]
            new.append((idx[c2[sel]], d2[sel], s2[sel]))
            return ~good

        bad = (med >= 0) & ~ok(_course_stop_day(c, d, s, start, med.size))
        drop[bad] = True
        _redraw_until(name, bad, redraw)
        keep = ~drop[c]
        rows = [(c[keep], d[keep], s[keep])] + new
        c, d, s = (np.concatenate([r[i] for r in rows]) for i in range(3))
        order = np.lexsort((d, c))
        return c[order], d[order], s[order]

    return draw_mat, draw_dispensings


def strategy_risks(
    effects: SimulationEffects | Mapping[str, Any] | None = None,
    *,
    grace_days: int = 30,
    horizon_days: int | Sequence[int] = 365,
    sustain_days: int = 180,
    stop_grace_days: int = 30,
    strategies: Sequence[str] = STRATEGY_NAMES,
    n_patients: int = 200_000,
    seed: int = 20261207,
    n_programs: int = 4,
    programme_effects: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Counterfactual relapse risks of MOUD strategies, by simulating each strategy.

    The truth that :func:`~iop_research.designs.clone_censor_weight` and
    :func:`~iop_research.designs.sustained_treatment` estimate on a cohort from
    :func:`simulate_cohort` with the same ``effects``. Each strategy re-runs the simulator's
    own steps (people, intake covariates, discharge, MAT, dispensings, aftercare, exact
    relapse times) for ``n_patients`` opioid index episodes, with the MOUD start or stop
    times *forced* by the strategy; the risk is the share of episodes whose latent relapse
    time is ``<= horizon_days`` after time zero. Nothing is computed by formula.

    Population and outcome
    ----------------------
    Opioid index episodes: the first episode of each person whose primary substance is
    opioids (the simulator's first round; no supply carried over from an earlier episode).
    The outcome is relapse of that episode (its latent relapse time; a relapse at latent
    time ``t`` is recorded on day ``ceil(t)``, so "by day h" is ``t <= h``).

    **No loss to follow-up and no death**: the risks are those of a world where nobody leaves
    the data and nobody dies (the relapse hazard before death is the simulator's, so this is
    the *net* risk, ``1 - S(h)`` of the relapse hazard). That is what a Kaplan-Meier analysis
    that censors at loss to follow-up *and at death* targets, as the CCW coverage study
    (``benchmarks/sim_ccw.py``) does; it is not the cumulative incidence with death as a
    competing event.

    Strategies (time zero in brackets)
    ----------------------------------
    ``natural`` (admission)
        No intervention: MOUD as the simulator draws it.
    ``start`` (admission)
        "Start MOUD within ``grace_days`` of admission": each episode's MOUD (medication,
        start day, course length) is drawn from the simulator's natural law *conditional on
        starting on a day* ``<= grace_days`` given the episode's covariates (rejection:
        natural draws repeated until the condition holds). Outcomes before the start day
        happen off MOUD, as they would under the strategy.
    ``no_start`` (admission)
        "Do not start within ``grace_days``": the natural law conditional on *not* starting on
        a day ``<= grace_days`` (never starting, or starting later as nature would) given the
        covariates. These two are the arms of ``clone_censor_weight(..., grace_days=G)``
        with the MOUD start day as ``treatment_time_col``.
    ``sustain`` (MOUD start)
        Population: index episodes that start MOUD (natural start day ``s``) and have not
        relapsed by ``s``; time zero = ``s``, horizon counted from ``s``. "Do not stop on days
        ``0..sustain_days``": the course length and dispensings are drawn from the natural
        law conditional on the stop day (end of the last supply, days from ``s``) being
        ``> sustain_days``, given medication and start. Refill gaps inside a course (at most
        20 days) are not stops, as with a 30-day permissible gap.
    ``stop`` (MOUD start)
        Same population; "stop on a day ``0..stop_grace_days``": conditional on the stop day
        being ``<= stop_grace_days``. These two are the arms of ``sustained_treatment(...,
        sustain_days=N, stop_grace_days=g)`` with time zero at the MOUD start and the stop day
        as ``stop_time_col``.

    Note on grace periods: the "start" truth is the risk of the regime above. A CCW analysis
    that gives weight 1 to the "start" clones during the grace period (Maringe et al. 2020,
    as :func:`~iop_research.designs.clone_censor_weight`) estimates the natural course during
    the grace period followed by the regime's hazard after it; the two agree when MOUD cannot
    change the outcome within the grace period (e.g. ``grace_days <= blanking_days``) and
    otherwise differ by about the effect of MOUD accrued within the grace period.

    Parameters
    ----------
    effects : SimulationEffects or mapping, optional
        Simulation parameters, as in :func:`simulate_cohort` (``None``: the defaults). Use
        the cohort's ``truth.effects`` (or :meth:`SimulationTruth.strategy_risks`).
    grace_days : int, default 30
        G of the "start"/"no_start" strategies (days from admission).
    horizon_days : int or sequence of int, default 365
        Day(s) after time zero at which the risk is reported.
    sustain_days, stop_grace_days : int, default 180, 30
        N and g of the "sustain"/"stop" strategies (days from the MOUD start).
    strategies : sequence of str, default all of :data:`STRATEGY_NAMES`
        Which strategies to simulate.
    n_patients : int, default 200000
        Opioid index episodes simulated per strategy (the "sustain"/"stop" population is the
        part of them that starts MOUD without relapsing first).
    seed : int, default 20261207
        The same seed gives identical risks. Every strategy uses the same people and the
        same random stream; draws that the strategy replaces come from a separate stream, so
        a strategy every episode already follows reproduces "natural" exactly.
    n_programs : int, default 4
        Programmes, as in :func:`simulate_cohort`.
    programme_effects : sequence of float, optional
        Programme effects on completion when ``effects.programme_completion_sd > 0`` (the
        cohort's ``truth.params["programme_completion_effects"]`` values); drawn otherwise.

    Returns
    -------
    pandas.DataFrame
        One row per strategy and horizon: ``strategy, horizon_days, risk, mc_se, n``;
        ``mc_se = sqrt(risk (1 - risk) / n)`` is the Monte Carlo standard error (episodes are
        independent) and ``n`` the number of index episodes in the strategy's population.

    Raises
    ------
    ModelSpecificationError
        Unknown strategy, days or sizes out of range, bad ``effects``, or a strategy that
        some episodes cannot follow under the natural law (no draw within 2000 satisfies it).

    See Also
    --------
    simulate_cohort, SimulationTruth.strategy_risks

    References
    ----------
    .. [1] Hernan M.A., Robins J.M. (2016). Using big data to emulate a target trial when a
       randomized trial is not available. Am J Epidemiol 183:758-764.
    .. [2] Maringe C. et al. (2020). Reflection on modern methods: trial emulation in the
       presence of immortal-time bias. Int J Epidemiol 49:1719-1729.
    .. [3] Wanis K.N., Sarvet A.L., Wen L., et al. (2024). Grace periods in comparative
       effectiveness studies of sustained treatments. J R Stat Soc A 187:796-810.

    Examples
    --------
    >>> r = strategy_risks(grace_days=30, horizon_days=365, strategies=("start", "no_start"),
    ...                    n_patients=2000, seed=1)
    >>> list(r.columns), r["strategy"].tolist()
    (['strategy', 'horizon_days', 'risk', 'mc_se', 'n'], ['start', 'no_start'])
    >>> bool(r["risk"].iloc[0] < r["risk"].iloc[1])  # MOUD lowers the relapse hazard
    True
    """
    eff = _resolve_effects(effects)
    if eff.confounder_weeks > 0:
        raise ModelSpecificationError(
            "strategy_risks: the time-varying confounder (confounder_weeks > 0) starts MOUD by its own weekly "
            "draws, which the strategies here do not force, so their risks would not be those of the strategy. "
            "Compute strategy risks with confounder_weeks = 0 (the default), or simulate the confounder's "
            "strategies directly from simulate_cohort(...).truth.confounder."
        )
    grace = _whole_days_argument(grace_days, "grace_days", minimum=0)
    sustain = _whole_days_argument(sustain_days, "sustain_days", minimum=0)
    stop_grace = _whole_days_argument(stop_grace_days, "stop_grace_days", minimum=0)
    horizons = [horizon_days] if isinstance(horizon_days, (int, np.integer)) else list(horizon_days)
    horizons = [_whole_days_argument(h, "horizon_days", minimum=1) for h in horizons]
    n = _whole_days_argument(n_patients, "n_patients", minimum=1)
    if isinstance(strategies, str):
        strategies = [strategies]
    unknown = [s for s in strategies if s not in STRATEGY_NAMES]
    if unknown or not strategies:
        raise ModelSpecificationError(
            f"strategy_risks: unknown strategy name(s) {unknown}; use some of {list(STRATEGY_NAMES)}."
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ModelSpecificationError(f"strategy_risks: seed must be an int, got {seed!r}.")
    if isinstance(n_programs, bool) or not isinstance(n_programs, (int, np.integer)) or not 1 <= n_programs <= 26:
        raise ModelSpecificationError(f"strategy_risks: n_programs must be an integer from 1 to 26, got {n_programs!r}.")
    program_p = np.array([_PROGRAM_TEMPLATES[k % 4]["weight"] for k in range(n_programs)])
    prog_u = None
    if eff.programme_completion_sd > 0:
        if programme_effects is None:
            prog_u = np.random.default_rng([seed, 3]).normal(0.0, eff.programme_completion_sd, n_programs)
        else:
            prog_u = np.asarray(programme_effects, dtype=float)
            if prog_u.shape != (n_programs,):
                raise ModelSpecificationError(
                    f"strategy_risks: programme_effects must hold n_programs ({n_programs}) numbers, got "
                    f"{prog_u.size}."
                )
    pat = _strategy_population(np.random.default_rng([seed, 0]), n, eff)
    pidx = np.arange(n)
    no_death = np.zeros(n)  # death rate 0: no death (the net risk; see the docstring)
    budget = np.ones(n)
    never_end = np.full(n, np.iinfo(np.int64).max // 4, dtype=np.int64)
    rows = []
    for k, name in enumerate(strategies):
        redraw_rng = np.random.default_rng([seed, 2, k])
        hooks = {}
        if name in ("start", "no_start"):
            hooks["draw_mat"] = _start_strategy_mat(name, grace, redraw_rng)
        elif name in ("sustain", "stop"):
            hooks["draw_mat"], hooks["draw_dispensings"] = _sustain_strategy_hooks(name, sustain, stop_grace,
                                                                                     redraw_rng)
        ep = _simulate_round(np.random.default_rng([seed, 1]), pat, pidx, np.zeros(n, dtype=np.int64), None, None,
                             program_p, no_death, budget, never_end, eff, prog_u, None, **hooks)
        t = ep["relapse_t"]
        if name in ("sustain", "stop"):
            c, _d, _s = ep["mat_rows"]
            first = np.full(n, np.iinfo(np.int64).max)
            np.minimum.at(first, c, _d)  # natural start day (first dispensing)
            eligible = (ep["mat_med"] >= 0) & (t > first)
            t = t[eligible] - first[eligible]
        for h in horizons:
            risk = float(np.mean(t <= h)) if t.size else np.nan
            rows.append({"strategy": name, "horizon_days": h, "risk": risk,
                         "mc_se": math.sqrt(risk * (1.0 - risk) / t.size) if t.size else np.nan, "n": int(t.size)})
    return pd.DataFrame(rows, columns=["strategy", "horizon_days", "risk", "mc_se", "n"])


# ---- opt-in Timeline Followback series (use_days) ----------------------------------------------

#: NIAAA heavy-drinking day: at least this many standard drinks (women 4, men 5; other values 5).
_TLFB_HEAVY = {"female": 4}


def _check_tlfb_effects(eff: SimulationEffects) -> None:
    bad = []
    for name in ("tlfb_share", "tlfb_use_after_relapse", "tlfb_heavy_share"):
        v = getattr(eff, name)
        if isinstance(v, bool) or not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
            bad.append(f"{name}={v!r} (a probability in [0, 1])")
    v = eff.tlfb_days
    if isinstance(v, bool) or not (isinstance(v, (int, np.integer)) and v >= 1):
        bad.append(f"tlfb_days={v!r} (a whole number of days >= 1)")
    if bad:
        raise ModelSpecificationError(
            f"Simulation parameters out of range: {'; '.join(bad)}. "
            "Fix them with dataclasses.replace(DEFAULT_EFFECTS, ...) or the effects mapping.")


def _add_use_days(rng: np.random.Generator, data: IOPData, eff: SimulationEffects) -> IOPData:
    """The data with a Timeline Followback ``use_days`` table for a share of the alcohol episodes (see
    ``SimulationEffects.tlfb_share``)."""
    adm = data.admissions
    te = data.truth.episodes.set_index(Col.episode_id)
    nxt = adm.sort_values([Col.patient_id, Col.admit_date]).groupby(Col.patient_id)[Col.admit_date].shift(-1)
    next_off = ((nxt - adm[Col.admit_date]).dt.days).reindex(adm.index).fillna(np.inf).to_numpy()
    alc = np.flatnonzero((adm[Col.primary_substance] == "alcohol").to_numpy())
    alc = alc[rng.random(alc.size) < eff.tlfb_share]
    eid = adm[Col.episode_id].to_numpy()[alc]
    obs_off = te.loc[eid, "observation_end_day"].to_numpy(dtype=float)
    length = np.minimum(np.minimum(float(eff.tlfb_days), obs_off + 1.0), next_off[alc])
    keep = length >= 1
    alc, eid, length = alc[keep], eid[keep], length[keep].astype(np.int64)
    relapse = np.ceil(te.loc[eid, "relapse_day"].to_numpy(dtype=float))  # inf: no relapse
    ep_row = np.repeat(np.arange(alc.size), length)
    day = np.arange(ep_row.size) - np.repeat(np.cumsum(length) - length, length)
    r = relapse[ep_row]
    used = (day == r) | ((day > r) & (rng.random(ep_row.size) < eff.tlfb_use_after_relapse))
    pid = adm[Col.patient_id].to_numpy()[alc]
    sex = data.patients.set_index(Col.patient_id)[Col.sex].reindex(pid).to_numpy()
    thr = np.array([_TLFB_HEAVY.get(str(x), 5) for x in sex], dtype=np.int64)[ep_row]
    heavy = used & (rng.random(ep_row.size) < eff.tlfb_heavy_share)
    drinks = np.where(heavy, thr + rng.poisson(2.0, ep_row.size),
                      1 + rng.binomial(thr - 2, 0.5, ep_row.size)) * used
    admit = adm[Col.admit_date].to_numpy()[alc]
    use_days = pd.DataFrame({
        Col.patient_id: pd.Series(pid[ep_row], dtype=adm[Col.patient_id].dtype),
        Col.use_date: pd.Series(admit[ep_row] + day.astype("timedelta64[D]")).astype("datetime64[ns]"),
        Col.substance: pd.Series(["alcohol"] * ep_row.size, dtype=adm[Col.primary_substance].dtype),
        Col.used: used,
        Col.drinks: drinks.astype(float),
    })
    return dataclasses.replace(data, use_days=use_days)

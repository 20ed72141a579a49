"""A tiny valid study in the canonical tables, shared by the schema and I/O tests."""
from __future__ import annotations

import pandas as pd


def valid_tables() -> dict[str, pd.DataFrame]:
    """A tiny valid study: 3 patients, 3 episodes (one open), 5 sessions, 2 dispensings, 3 events."""
    def d(values):  # canonical datetime64[ns] (pandas 3 infers microseconds from text)
        return pd.to_datetime(values).astype("datetime64[ns]")
    patients = pd.DataFrame({
        "patient_id": ["P1", "P2", "P3"],
        "birth_year": [1980, 1975, 1990],
        "sex": ["female", "male", "unknown"],
        "race": ["white", None, "black"],
        "ethnicity": ["not_hispanic", "hispanic", None],
    })
    admissions = pd.DataFrame({
        "episode_id": ["E1", "E2", "E3"],
        "patient_id": ["P1", "P1", "P2"],
        "program": ["north", "north", "south"],
        "admit_date": d(["2024-01-02", "2024-04-01", "2024-01-10"]),
        "discharge_date": d(["2024-02-15", None, "2024-01-30"]),
        "discharge_reason": ["completed", None, "dropped_out"],
        "referral_source": ["self", "healthcare", "criminal_justice"],
        "primary_substance": ["opioids", "opioids", "alcohol"],
        "psychiatric_comorbidity": [True, False, True],
        "prior_treatment_episodes": [0, 1, 3],
        "severity_score": [4.5, 6.0, None],
        "housing": ["stable", None, "homeless"],
        "employment": ["employed", "unemployed", None],
    })
    sessions = pd.DataFrame({
        "patient_id": ["P1", "P1", "P1", "P2", "P2"],
        "episode_id": ["E1", None, "E2", "E3", None],
        "session_date": d(["2024-01-03", "2024-01-05", "2024-04-02", "2024-01-12", "2024-01-20"]),
        "modality": ["group", "individual", "family", "education", "holistic"],
        "minutes": [180, 60, 90, 120, 60],
        "attended": [True, False, True, True, True],
    })
    medications = pd.DataFrame({
        "patient_id": ["P1", "P2"],
        "medication": ["buprenorphine", "naltrexone_xr"],
        "dispense_date": d(["2024-01-05", "2024-01-15"]),
        "days_supply": [28, 28],
        "dose_mg": [16.0, None],
    })
    events = pd.DataFrame({
        "patient_id": ["P1", "P2", "P2"],
        "event_date": d(["2024-02-01", "2024-03-01", "2024-05-01"]),
        "event_type": ["uds", "self_report_use", "death"],
        "result": ["negative", None, None],
        "substance": [None, "alcohol", None],
    })
    observation = pd.DataFrame({
        "patient_id": ["P1", "P2", "P3"],
        "observation_end": d(["2024-06-30", "2024-05-01", "2024-06-30"]),
    })
    return {"patients": patients, "admissions": admissions, "sessions": sessions,
            "medications": medications, "events": events, "observation": observation}

"""A realistic EHR-like extract for tests of the mapping file (``iop_research.data.mapping``).

Starts from the simulator (``simulate_cohort``) and writes what a clinic's EHR export looks
like: its own file and column names, medical record numbers instead of patient ids, Y/N
flags, service codes (``IOP-Grp``), ICD-10 codes for the primary substance, disposition
codes, US dates (``03/15/2023``), cancelled appointments that are not sessions, and no
observation table (follow-up ends at the extract's cut-off). The committed mapping
``examples/ehr_extract/mapping.toml`` maps it back onto the contract.

Usage: ``python tests/ehr_extract.py OUT_DIR [N_PATIENTS] [SEED]``; from tests,
``write_ehr_extract(out_dir, n_patients=300, seed=12)`` returns the simulated data it
came from.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from iop_research.data.io import IOPData
from iop_research.data.synth import simulate_cohort

US_DATE = "%m/%d/%Y"

GENDER = {"male": "M", "female": "F", "unknown": "U"}
RACE = {"white": "White", "black": "Black or African American", "asian": "Asian",
        "american_indian": "American Indian/Alaska Native", "multiple": "Two or more races", "other": "Other"}
ETHNICITY = {"hispanic": "Hispanic or Latino", "not_hispanic": "Not Hispanic or Latino", "unknown": "Unknown"}
SITE = {"Site A": "IOP-NORTH", "Site B": "IOP-SOUTH", "Site C": "IOP-EAST", "Site D": "IOP-WEST"}
DISPOSITION = {"completed": "COMP", "dropped_out": "AMA", "terminated": "ADMIN", "transferred": "XFER",
               "incarcerated": "JAIL", "death": "EXP", "other": "OTH"}
REFERRAL = {"self": "SELF", "residential_step_down": "RES-STEPDOWN", "healthcare": "PROVIDER",
            "criminal_justice": "COURT", "community": "COMMUNITY", "other": "OTHER"}
ICD10 = {"alcohol": "F10.20", "opioids": "F11.20", "stimulants": "F15.20", "cannabis": "F12.20",
         "sedatives": "F13.20", "other": "F19.20"}
HOUSING = {"stable": "Stable", "unstable": "Unstable", "homeless": "Homeless"}
EMPLOYMENT = {"employed": "Employed", "unemployed": "Unemployed", "not_in_labor_force": "Not in labor force"}
SERVICE = {"individual": "IOP-Ind", "group": "IOP-Grp", "family": "IOP-Fam", "education": "IOP-Edu",
           "holistic": "IOP-Hol"}
DRUG = {"methadone": "Methadone", "buprenorphine": "Buprenorphine/Naloxone", "naltrexone_oral": "Naltrexone 50mg tab",
        "naltrexone_xr": "Vivitrol 380mg inj", "acamprosate": "Acamprosate", "disulfiram": "Disulfiram"}
EVENT = {"uds": "UDS", "self_report_use": "SELF-RPT", "overdose": "OD", "ed_visit": "ED", "readmission": "READMIT",
         "death": "DECEASED", "aftercare_contact": "ALUMNI"}
RESULT = {"positive": "POS", "negative": "NEG"}
CANCELLED = "Cancelled by clinic"


def mrn(patient_id: pd.Series) -> pd.Series:
    """The extract's medical record number for a simulator patient id (P000123 -> MRN000123)."""
    return patient_id.str.replace("P", "MRN", regex=False)


def _us(s: pd.Series) -> pd.Series:
    return s.dt.strftime(US_DATE).where(s.notna(), "")


def _code(s: pd.Series, codes: dict) -> pd.Series:
    return s.map(codes).where(s.notna(), "")


def _yn(s: pd.Series) -> pd.Series:
    return s.map({True: "Y", False: "N"})


def write_ehr_extract(out_dir: str | Path, *, n_patients: int = 300, seed: int = 12,
                      cancelled_share: float = 0.02) -> tuple[Path, IOPData]:
    """Write the extract to ``out_dir``; return the directory and the simulated data.

    Files: ``demographics.csv``, ``encounters.csv``, ``visits.csv`` (with about
    ``cancelled_share`` extra rows of cancelled appointments), ``pharmacy.csv``,
    ``clinical_events.csv``, ``EXTRACT_INFO.txt`` (the cut-off date). Dates are US
    ``MM/DD/YYYY``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = simulate_cohort(n_patients, seed=seed)
    rng = np.random.default_rng(seed + 1)
    p = data.patients
    pd.DataFrame({
        "MRN": mrn(p["patient_id"]), "BirthYr": p["birth_year"].astype(str), "Gender": _code(p["sex"], GENDER),
        "Race": _code(p["race"], RACE), "Ethnicity": _code(p["ethnicity"], ETHNICITY),
        "ZipCode": rng.integers(10000, 99999, len(p)).astype(str),  # not carried into the contract
    }).to_csv(out / "demographics.csv", index=False)
    a = data.admissions
    pd.DataFrame({
        "EncounterID": a["episode_id"].str.replace("E", "ENC", regex=False), "MRN": mrn(a["patient_id"]),
        "Site": _code(a["program"], SITE), "AdmitDt": _us(a["admit_date"]), "DischargeDt": _us(a["discharge_date"]),
        "DischargeDisposition": _code(a["discharge_reason"], DISPOSITION),
        "ReferralSrc": _code(a["referral_source"], REFERRAL), "PrimaryDx": _code(a["primary_substance"], ICD10),
        "PsychDx": _yn(a["psychiatric_comorbidity"]), "PriorTxEpisodes": a["prior_treatment_episodes"].astype(str),
        "ASI_Severity": a["severity_score"].map(lambda v: "" if pd.isna(v) else repr(float(v))),
        "HousingStatus": _code(a["housing"], HOUSING), "EmploymentStatus": _code(a["employment"], EMPLOYMENT),
    }).to_csv(out / "encounters.csv", index=False)
    s = data.sessions
    visits = pd.DataFrame({
        "MRN": mrn(s["patient_id"]), "EncounterID": s["episode_id"].str.replace("E", "ENC", regex=False),
        "VisitDate": _us(s["session_date"]), "ServiceCode": _code(s["modality"], SERVICE),
        "DurationMin": s["minutes"].astype(str), "ApptStatus": s["attended"].map({True: "Kept", False: "No-show"}),
    })
    extra = visits.sample(frac=cancelled_share, random_state=seed).assign(ApptStatus=CANCELLED)
    visits = pd.concat([visits, extra]).sort_index(kind="stable").reset_index(drop=True)
    visits.insert(0, "VisitID", [f"V{i:07d}" for i in range(1, len(visits) + 1)])
    visits.to_csv(out / "visits.csv", index=False)
    m = data.medications
    pd.DataFrame({
        "MRN": mrn(m["patient_id"]), "DrugName": _code(m["medication"], DRUG), "FillDate": _us(m["dispense_date"]),
        "DaysSupply": m["days_supply"].astype(str),
        "DoseMg": m["dose_mg"].map(lambda v: "" if pd.isna(v) else repr(float(v))),
    }).to_csv(out / "pharmacy.csv", index=False)
    e = data.events
    pd.DataFrame({
        "MRN": mrn(e["patient_id"]), "EventDt": _us(e["event_date"]), "EventCode": _code(e["event_type"], EVENT),
        "Result": _code(e["result"], RESULT), "Substance": e["substance"].fillna(""),
    }).to_csv(out / "clinical_events.csv", index=False)
    cutoff = data.observation["observation_end"].max()
    (out / "EXTRACT_INFO.txt").write_text(f"Extract cut-off: {cutoff:{US_DATE}}\n", encoding="utf-8")
    return out, data


def extract_date(data: IOPData) -> pd.Timestamp:
    """The cut-off written to EXTRACT_INFO.txt (latest observation_end of the simulation)."""
    return data.observation["observation_end"].max()


if __name__ == "__main__":  # pragma: no cover - manual use
    target = Path(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    sd = int(sys.argv[3]) if len(sys.argv) > 3 else 12
    write_ehr_extract(target, n_patients=n, seed=sd)
    print(f"Wrote an EHR-like extract of {n} patients to {target}")

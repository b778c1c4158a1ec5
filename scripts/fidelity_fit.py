"""Least-squares fit of measured ventricular volume on the four requested covariates.

How far measured ventricles follow their own request, and how much they follow the other
covariates (docs/fidelity.md, "Along training"):

  python scripts/fidelity_fit.py samples OUT/measurements.csv
      the `training_subjects` rows of a `brain-ldm fidelity` run;
  python scripts/fidelity_fit.py cohort COHORT/participants.tsv VOLUMES.csv
      real images: VOLUMES.csv is `brain-ldm volumes` output for cohort images, matched to
      participants.tsv by subject id (also prints r against the true ventricular volume).

Prints the coefficients (per requested ventricular mm³, per brain mm³, per year, for male)
and the spread (sd) each term contributes. Needs numpy.
"""
import csv
import re
import sys

import numpy as np


def fit(sex, age, vent, brain, measured):
    x = np.stack([np.ones_like(vent), sex, age, vent, brain], 1)
    coef = np.linalg.lstsq(x, measured, rcond=None)[0]
    _, c_sex, c_age, c_vent, c_brain = coef
    print(f"n {len(measured)}; r(requested, measured ventricles) {np.corrcoef(vent, measured)[0, 1]:.3f}")
    print(f"per ventricular mm³ {c_vent:.3f}, per brain mm³ {c_brain:.4f}, "
          f"per year {c_age:.0f} mm³, male {c_sex:.0f} mm³")
    print(f"spread of the terms: ventricular {np.std(c_vent * vent):.0f}, brain "
          f"{np.std(c_brain * brain):.0f}, age {np.std(c_age * age):.0f} mm³; "
          f"residual {np.std(measured - x @ coef):.0f} mm³")


def samples(path):
    rows = [r for r in csv.DictReader(open(path))
            if r["experiment"] == "training_subjects" and not r["error"]]
    col = lambda k: np.array([float(r[k]) for r in rows])
    sex = np.array([1.0 if r["sex"] == "M" else 0.0 for r in rows])
    fit(sex, col("age_years"), col("ventricular_volume_mm3"), col("brain_volume_mm3"),
        col("measured_ventricular_volume_mm3"))


def cohort(participants, volumes):
    info = {r["participant_id"]: r for r in csv.DictReader(open(participants), delimiter="\t")}
    rows = []
    for r in csv.DictReader(open(volumes)):
        sub = re.search(r"(sub-[^/_]+)", r["file"]).group(1)
        rows.append((info[sub], float(r["ventricular_volume"])))
    p = [r for r, _ in rows]
    measured = np.array([m for _, m in rows])
    col = lambda k: np.array([float(r[k]) for r in p])
    sex = np.array([1.0 if r["sex"] == "M" else 0.0 for r in p])
    fit(sex, col("age"), col("ventricular_volume"), col("brain_volume"), measured)


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "samples" and len(sys.argv) == 3:
        samples(sys.argv[2])
    elif mode == "cohort" and len(sys.argv) == 4:
        cohort(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)

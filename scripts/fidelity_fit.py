"""Least-squares fit of measured ventricular volume on the four requested covariates.

How far measured ventricles follow their own request, and how much they follow the other
covariates (docs/fidelity.md, "Along training"):

  python scripts/fidelity_fit.py samples OUT/measurements.csv
      the `training_subjects` rows of a `brain-ldm fidelity` run;
  python scripts/fidelity_fit.py cohort COHORT/participants.tsv VOLUMES.csv
      real images: VOLUMES.csv is `brain-ldm volumes` output for cohort images, matched to
      participants.tsv by subject id (also prints r against the true ventricular volume);
  python scripts/fidelity_fit.py reconstructions COHORT/participants.tsv OUT/reconstructions.csv
      the autoencoder part of a `brain-ldm fidelity --cohort COHORT` run: r, slope and mean of
      the ventricular and brain volume measured on the images and on their reconstructions,
      against the true (label) volumes of participants.tsv.

The first two modes print the coefficients (per requested ventricular mm³, per brain mm³, per year, for male)
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
    print(f"n {len(measured)}; r(requested, measured ventricles) {np.corrcoef(vent, measured)[0, 1]:.3f}; "
          f"mean measured {measured.mean():.0f} mm³ (requested {vent.mean():.0f} mm³)")
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


def participants_of(participants, table):
    """The participants.tsv row of each row of the CSV `table`, matched by subject id."""
    info = {r["participant_id"]: r for r in csv.DictReader(open(participants), delimiter="\t")}
    return [(info[re.search(r"(sub-[^/_]+)", r["file"]).group(1)], r)
            for r in csv.DictReader(open(table))]


def cohort(participants, volumes):
    rows = [(p, float(r["ventricular_volume"])) for p, r in participants_of(participants, volumes)]
    p = [r for r, _ in rows]
    measured = np.array([m for _, m in rows])
    col = lambda k: np.array([float(r[k]) for r in p])
    sex = np.array([1.0 if r["sex"] == "M" else 0.0 for r in p])
    fit(sex, col("age"), col("ventricular_volume"), col("brain_volume"), measured)


def reconstructions(participants, table):
    rows = [(p, r) for p, r in participants_of(participants, table) if not r["error"]]
    print(f"n {len(rows)} images measured before and after")
    for volume in ["ventricular_volume", "brain_volume"]:
        truth = np.array([float(p[volume]) for p, _ in rows])
        for name, column in [("images", f"{volume}_mm3"),
                             ("reconstructions", f"reconstructed_{volume}_mm3")]:
            measured = np.array([float(r[column]) for _, r in rows])
            print(f"{volume} of {name} vs truth: r {np.corrcoef(truth, measured)[0, 1]:.3f}, "
                  f"slope {np.polyfit(truth, measured, 1)[0]:.3f}, mean {measured.mean():.0f} "
                  f"mm³ (truth {truth.mean():.0f} mm³)")


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "samples" and len(sys.argv) == 3:
        samples(sys.argv[2])
    elif mode == "cohort" and len(sys.argv) == 4:
        cohort(sys.argv[2], sys.argv[3])
    elif mode == "reconstructions" and len(sys.argv) == 4:
        reconstructions(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)

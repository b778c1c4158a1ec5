//! The four covariates the brain LDM is conditioned on, in physical units, and their
//! normalisation to the model's inputs.
//!
//! Pinaya et al. 2022 min-max scale each covariate to [0, 1] over their UK Biobank cohort and
//! publish two of the ranges: ventricular volume 6995.68–171375.0 mm³ and brain volume
//! 1144240–1793910 mm³. Not published: the age range (the cohort spans 44–82 years and
//! InverseSR, by the same group, scales age as `(age − 44) / 38`, which is what
//! [`CovariateScaling::paper`] uses) and which sex is 0 or 1 (UK Biobank's own coding of
//! field 31 is 0 = female, 1 = male, which is what [`Sex::code`] uses). Values outside the
//! ranges are let through: the paper extrapolates with them (normalised ventricular volume
//! −0.5 … 1.9).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Biological sex as the model's first covariate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sex {
    /// Coded 0.
    Female,
    /// Coded 1.
    Male,
}

impl Sex {
    /// The normalised value: 0 for female, 1 for male (UK Biobank's coding; the paper does
    /// not say which it used).
    pub fn code(self) -> f32 {
        match self {
            Sex::Female => 0.0,
            Sex::Male => 1.0,
        }
    }
}

impl std::str::FromStr for Sex {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f" | "female" => Ok(Sex::Female),
            "m" | "male" => Ok(Sex::Male),
            _ => Err(Error::InvalidCovariate(format!(
                "sex must be F or M, got {s:?}"
            ))),
        }
    }
}

/// Covariates in physical units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Covariates {
    /// Biological sex.
    pub sex: Sex,
    /// Age in years.
    pub age_years: f64,
    /// Ventricular volume in mm³ (head-size normalised in the paper).
    pub ventricular_volume_mm3: f64,
    /// Brain volume in mm³ (head-size normalised in the paper).
    pub brain_volume_mm3: f64,
}

/// The model's conditioning vector `[sex, age, ventricular volume, brain volume]`, each
/// normalised (nominally in [0, 1]); the order of the public bundle's `conditioning`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Conditioning(pub [f32; 4]);

impl Conditioning {
    /// Checks that every value is finite.
    ///
    /// # Errors
    /// [`Error::InvalidCovariate`] naming the first non-finite value.
    pub fn validated(self) -> Result<Self> {
        const NAMES: [&str; 4] = ["sex", "age", "ventricular volume", "brain volume"];
        for (value, name) in self.0.iter().zip(NAMES) {
            if !value.is_finite() {
                return Err(Error::InvalidCovariate(format!(
                    "normalised {name} is {value}, not a finite number"
                )));
            }
        }
        Ok(self)
    }
}

/// Linear min-max scaling of each covariate: `(value − min) / (max − min)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CovariateScaling {
    /// Age range in years mapped to [0, 1].
    pub age_years: (f64, f64),
    /// Ventricular volume range in mm³ mapped to [0, 1].
    pub ventricular_volume_mm3: (f64, f64),
    /// Brain volume range in mm³ mapped to [0, 1].
    pub brain_volume_mm3: (f64, f64),
}

impl CovariateScaling {
    /// The paper's published volume ranges and InverseSR's age range 44–82 years.
    pub fn paper() -> Self {
        Self {
            age_years: (44.0, 82.0),
            ventricular_volume_mm3: (6995.68, 171375.0),
            brain_volume_mm3: (1144240.0, 1793910.0),
        }
    }

    /// The normalised conditioning vector of `covariates`.
    ///
    /// # Errors
    /// [`Error::InvalidCovariate`] for a non-finite value or an empty range.
    ///
    /// ```
    /// use brain_ldm::{CovariateScaling, Covariates, Sex};
    /// let c = Covariates { sex: Sex::Female, age_years: 63.0, ventricular_volume_mm3: 6995.68,
    ///                      brain_volume_mm3: 1793910.0 };
    /// let v = CovariateScaling::paper().normalise(&c)?.0;
    /// assert_eq!((v[0], v[1], v[2], v[3]), (0.0, 0.5, 0.0, 1.0));
    /// # Ok::<(), brain_ldm::Error>(())
    /// ```
    pub fn normalise(&self, covariates: &Covariates) -> Result<Conditioning> {
        let scale = |value: f64, (lo, hi): (f64, f64), name: &str| -> Result<f32> {
            if !(hi - lo).is_finite() || hi <= lo {
                return Err(Error::InvalidCovariate(format!(
                    "{name} range {lo}..{hi} is empty"
                )));
            }
            Ok(((value - lo) / (hi - lo)) as f32)
        };
        Conditioning([
            covariates.sex.code(),
            scale(covariates.age_years, self.age_years, "age")?,
            scale(
                covariates.ventricular_volume_mm3,
                self.ventricular_volume_mm3,
                "ventricular volume",
            )?,
            scale(
                covariates.brain_volume_mm3,
                self.brain_volume_mm3,
                "brain volume",
            )?,
        ])
        .validated()
    }
}

impl CovariateScaling {
    /// The physical covariates of a normalised conditioning vector: the inverse of
    /// [`normalise`](Self::normalise), with a sex code below 0.5 read as female.
    ///
    /// # Errors
    /// [`Error::InvalidCovariate`] for a non-finite value or an empty range.
    ///
    /// ```
    /// use brain_ldm::{Conditioning, CovariateScaling, Sex};
    /// let c = CovariateScaling::paper().physical(&Conditioning([1.0, 0.5, 0.0, 1.0]))?;
    /// assert_eq!((c.sex, c.age_years, c.brain_volume_mm3), (Sex::Male, 63.0, 1793910.0));
    /// # Ok::<(), brain_ldm::Error>(())
    /// ```
    pub fn physical(&self, conditioning: &Conditioning) -> Result<Covariates> {
        let [sex, age, ventricular, brain] = conditioning.validated()?.0;
        let unscale = |value: f32, (lo, hi): (f64, f64), name: &str| -> Result<f64> {
            if !(hi - lo).is_finite() || hi <= lo {
                return Err(Error::InvalidCovariate(format!(
                    "{name} range {lo}..{hi} is empty"
                )));
            }
            Ok(lo + value as f64 * (hi - lo))
        };
        Ok(Covariates {
            sex: if sex < 0.5 { Sex::Female } else { Sex::Male },
            age_years: unscale(age, self.age_years, "age")?,
            ventricular_volume_mm3: unscale(
                ventricular,
                self.ventricular_volume_mm3,
                "ventricular volume",
            )?,
            brain_volume_mm3: unscale(brain, self.brain_volume_mm3, "brain volume")?,
        })
    }
}

/// Physical covariates of which some may be left open, to be drawn from the model's training
/// distribution with [`complete`](Self::complete).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PartialCovariates {
    /// Biological sex, if given.
    pub sex: Option<Sex>,
    /// Age in years, if given.
    pub age_years: Option<f64>,
    /// Ventricular volume in mm³, if given.
    pub ventricular_volume_mm3: Option<f64>,
    /// Brain volume in mm³, if given.
    pub brain_volume_mm3: Option<f64>,
}

impl From<Covariates> for PartialCovariates {
    fn from(c: Covariates) -> Self {
        Self {
            sex: Some(c.sex),
            age_years: Some(c.age_years),
            ventricular_volume_mm3: Some(c.ventricular_volume_mm3),
            brain_volume_mm3: Some(c.brain_volume_mm3),
        }
    }
}

impl PartialCovariates {
    /// The covariates when all four are given.
    pub fn full(&self) -> Option<Covariates> {
        Some(Covariates {
            sex: self.sex?,
            age_years: self.age_years?,
            ventricular_volume_mm3: self.ventricular_volume_mm3?,
            brain_volume_mm3: self.brain_volume_mm3?,
        })
    }

    /// The command-line style names of the covariates left open, in the model's order
    /// (`"sex"`, `"age"`, `"ventricular-volume"`, `"brain-volume"`).
    pub fn missing(&self) -> Vec<&'static str> {
        [
            (self.sex.is_none(), "sex"),
            (self.age_years.is_none(), "age"),
            (self.ventricular_volume_mm3.is_none(), "ventricular-volume"),
            (self.brain_volume_mm3.is_none(), "brain-volume"),
        ]
        .into_iter()
        .filter_map(|(open, name)| open.then_some(name))
        .collect()
    }

    /// Fills the open covariates from one subject of the training distribution:
    /// `training` holds the normalised covariate rows of the training subjects (as
    /// `model.json`'s `training_covariates`), mapped back to physical units with `scaling`.
    /// The row is chosen deterministically from `(seed, index)` (the same sample of a run
    /// always gets the same values, independently of its noise); when the sex is given, only
    /// training subjects of that sex are candidates (all of them if there is none). Drawn
    /// ages are rounded to 0.01 year and volumes to 1 mm³; given values are kept as they
    /// are; with all four given, `training` is not needed.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] when a covariate is open and `training` is `None` or empty;
    /// [`Error::InvalidCovariate`] for a non-finite given or stored value.
    ///
    /// ```
    /// use brain_ldm::{CovariateScaling, PartialCovariates, Sex};
    /// let training = [[0.0, 0.2, 0.3, 0.4], [1.0, 0.8, 0.6, 0.9]];
    /// let partial = PartialCovariates { sex: Some(Sex::Male), age_years: Some(70.0),
    ///                                   ..Default::default() };
    /// let c = partial.complete(&CovariateScaling::paper(), Some(&training), 0, 0)?;
    /// assert_eq!((c.sex, c.age_years), (Sex::Male, 70.0));
    /// // The only male training subject's brain volume: 0.9 of the paper's range.
    /// assert!((c.brain_volume_mm3 - (1144240.0 + 0.9 * 649670.0)).abs() < 1.0);
    /// # Ok::<(), brain_ldm::Error>(())
    /// ```
    pub fn complete(
        &self,
        scaling: &CovariateScaling,
        training: Option<&[[f32; 4]]>,
        seed: u64,
        index: u64,
    ) -> Result<Covariates> {
        let checked = |value: Option<f64>, name: &str| -> Result<Option<f64>> {
            match value {
                Some(v) if !v.is_finite() => Err(Error::InvalidCovariate(format!(
                    "{name} is {v}, not a finite number"
                ))),
                v => Ok(v),
            }
        };
        let age = checked(self.age_years, "age")?;
        let ventricular = checked(self.ventricular_volume_mm3, "ventricular volume")?;
        let brain = checked(self.brain_volume_mm3, "brain volume")?;
        if let Some(full) = self.full() {
            return Ok(full);
        }
        let rows = match training {
            Some(rows) if !rows.is_empty() => rows,
            _ => {
                return Err(Error::InvalidRequest(format!(
                    "the model stores no training covariates to draw the missing {} from; give all four covariates",
                    self.missing().join(", ")
                )))
            }
        };
        let same_sex: Vec<&[f32; 4]> = match self.sex {
            Some(sex) => rows
                .iter()
                .filter(|row| (row[0] >= 0.5) == (sex == Sex::Male))
                .collect(),
            None => Vec::new(),
        };
        let candidates: Vec<&[f32; 4]> = if same_sex.is_empty() {
            rows.iter().collect()
        } else {
            same_sex
        };
        let pick = splitmix64(splitmix64(seed ^ COVARIATE_DRAW_DOMAIN) ^ index);
        let row = candidates[(pick % candidates.len() as u64) as usize];
        let drawn = scaling.physical(&Conditioning(*row))?;
        // Rounded to what the stored (f32, normalised) value resolves, for readable records.
        Ok(Covariates {
            sex: self.sex.unwrap_or(drawn.sex),
            age_years: age.unwrap_or((drawn.age_years * 100.0).round() / 100.0),
            ventricular_volume_mm3: ventricular.unwrap_or(drawn.ventricular_volume_mm3.round()),
            brain_volume_mm3: brain.unwrap_or(drawn.brain_volume_mm3.round()),
        })
    }
}

/// Separates the covariate draw of `(seed, index)` from anything else derived from the seed.
const COVARIATE_DRAW_DOMAIN: u64 = 0xC0FA_7E5D_2A11_0001;

/// SplitMix64's finaliser: a well-mixed 64-bit hash, stable across platforms and releases.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Default for CovariateScaling {
    fn default() -> Self {
        Self::paper()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_ranges_map_to_unit_interval_and_extrapolate() {
        let s = CovariateScaling::paper();
        let c = Covariates {
            sex: Sex::Male,
            age_years: 82.0,
            ventricular_volume_mm3: 171375.0 + 0.9 * (171375.0 - 6995.68),
            brain_volume_mm3: 1144240.0,
        };
        let v = s.normalise(&c).unwrap().0;
        assert_eq!(v[0], 1.0);
        assert!((v[1] - 1.0).abs() < 1e-6);
        assert!((v[2] - 1.9).abs() < 1e-5);
        assert_eq!(v[3], 0.0);
    }

    #[test]
    fn non_finite_values_are_rejected_by_name() {
        let c = Covariates {
            sex: Sex::Female,
            age_years: f64::NAN,
            ventricular_volume_mm3: 3e4,
            brain_volume_mm3: 1.4e6,
        };
        let err = CovariateScaling::paper().normalise(&c).unwrap_err();
        assert!(err.to_string().contains("age"), "{err}");
        assert!("x".parse::<Sex>().is_err());
        assert_eq!("F".parse::<Sex>().unwrap(), Sex::Female);
    }

    #[test]
    fn physical_inverts_normalise() {
        let s = CovariateScaling::paper();
        let c = Covariates {
            sex: Sex::Male,
            age_years: 71.5,
            ventricular_volume_mm3: 42_000.0,
            brain_volume_mm3: 1.31e6,
        };
        let back = s.physical(&s.normalise(&c).unwrap()).unwrap();
        assert_eq!(back.sex, Sex::Male);
        assert!((back.age_years - 71.5).abs() < 1e-4);
        assert!((back.ventricular_volume_mm3 - 42_000.0).abs() < 0.1);
        assert!((back.brain_volume_mm3 - 1.31e6).abs() < 1.0);
    }

    #[test]
    fn open_covariates_come_from_a_training_row_chosen_by_seed_and_index() {
        let s = CovariateScaling::paper();
        let rows: Vec<[f32; 4]> = (0..10)
            .map(|i| [(i % 2) as f32, i as f32 / 10.0, 0.5, 0.25])
            .collect();
        let partial = PartialCovariates {
            sex: Some(Sex::Female),
            brain_volume_mm3: Some(1.5e6),
            ..Default::default()
        };
        let draw = |seed, index| partial.complete(&s, Some(&rows), seed, index).unwrap();
        let a = draw(0, 0);
        assert_eq!(a, draw(0, 0), "deterministic");
        assert_eq!(
            (a.sex, a.brain_volume_mm3),
            (Sex::Female, 1.5e6),
            "given values kept"
        );
        // The age comes from a female row (even i): (i / 10) of 44..82.
        let ages: std::collections::BTreeSet<u64> = (0..40)
            .map(|index| {
                let c = draw(7, index);
                assert!(
                    (c.ventricular_volume_mm3 - (6995.68 + 0.5 * (171375.0 - 6995.68))).abs() < 1.0
                );
                let i = ((c.age_years - 44.0) / 38.0 * 10.0).round() as u64;
                assert_eq!(
                    i % 2,
                    0,
                    "a male row was drawn for a woman: age {}",
                    c.age_years
                );
                i
            })
            .collect();
        assert!(
            ages.len() >= 4,
            "the draws should spread over the rows: {ages:?}"
        );
        // Another seed draws other rows.
        assert!((0..10).any(|index| draw(1, index) != draw(2, index)));
    }

    #[test]
    fn open_covariates_without_a_training_distribution_are_refused() {
        let s = CovariateScaling::paper();
        let partial = PartialCovariates {
            age_years: Some(70.0),
            ..Default::default()
        };
        let err = partial.complete(&s, None, 0, 0).unwrap_err().to_string();
        assert!(
            err.contains("sex, ventricular-volume, brain-volume"),
            "{err}"
        );
        let full = Covariates {
            sex: Sex::Female,
            age_years: 70.0,
            ventricular_volume_mm3: 3e4,
            brain_volume_mm3: 1.4e6,
        };
        assert_eq!(
            PartialCovariates::from(full)
                .complete(&s, None, 0, 0)
                .unwrap(),
            full
        );
        let nan = PartialCovariates {
            age_years: Some(f64::NAN),
            ..Default::default()
        };
        assert!(nan
            .complete(&s, Some(&[[0.0; 4]]), 0, 0)
            .unwrap_err()
            .to_string()
            .contains("age"));
    }
}

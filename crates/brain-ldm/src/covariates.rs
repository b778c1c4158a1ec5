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
}

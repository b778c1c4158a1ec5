//! The covariate model: sex, age, head size, and the ventricular and brain volumes the
//! anatomy is then made to match. See docs/synth.md for the model in words.

use crate::error::Result;
use crate::rng::{stream, truncated, Stream};
use crate::template::template;

/// Probability that a subject is male (the paper's cohort: 47 %).
pub const P_MALE: f64 = 0.47;
/// Age range in years (the paper's cohort).
pub const AGE_RANGE: (f64, f64) = (44.0, 82.0);
/// Mean and standard deviation of age in years (the paper's cohort).
pub const AGE_MEAN_SD: (f64, f64) = (63.6, 7.5);
/// The paper's range of ventricular volume in mm³; drawn volumes stay inside it.
pub const VENTRICLE_RANGE: (f64, f64) = (6_995.68, 171_375.0);

/// Mean linear head scale relative to the template, for women and men.
const HEAD_SCALE_MEAN: (f64, f64) = (0.975, 1.025);
/// Standard deviation of the log head scale (truncated at three deviations).
const HEAD_SCALE_LOG_SD: f64 = 0.025;
/// Median ventricular volume at mean age for a template-sized head, in mm³.
const VENTRICLE_MEDIAN: f64 = 25_000.0;
/// Growth of ventricular volume per year of age (log scale).
const VENTRICLE_PER_YEAR: f64 = 0.04;
/// Extra ventricular volume of men beyond head size (log scale).
const VENTRICLE_MALE: f64 = 0.10;
/// Individual variation of ventricular volume (log scale).
const VENTRICLE_LOG_SD: f64 = 0.45;
/// Mean atrophy (lost fraction of intracranial volume) at mean age, its growth per
/// year, its individual deviation and its range.
const ATROPHY: (f64, f64, f64, (f64, f64)) = (0.10, 0.003, 0.03, (0.02, 0.25));

/// Biological sex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Sex {
    /// Female (`F` in participants.tsv, 0 as a conditioning value).
    Female,
    /// Male (`M` in participants.tsv, 1 as a conditioning value).
    Male,
}

impl Sex {
    /// The BIDS participants.tsv code: `F` or `M`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Female => "F",
            Self::Male => "M",
        }
    }
}

/// What is drawn for one subject before its anatomy is made.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Covariates {
    /// Sex.
    pub sex: Sex,
    /// Age in years.
    pub age: f64,
    /// Linear head size relative to the template (intracranial volume ≈ 1.887 M mm³ × cube).
    pub head_scale: f64,
    /// The ventricular volume the anatomy is made to have, in mm³.
    pub ventricular_volume: f64,
    /// The brain (GM + WM) volume the anatomy is made to have, in mm³.
    pub brain_volume: f64,
}

/// Draws the covariates of subject `index` of the cohort with seed `seed`.
///
/// Cheap (no anatomy is made); equal to the `covariates` of the generated subject.
///
/// # Errors
/// [`crate::SynthError::Template`] if the embedded template cannot be decoded.
///
/// ```
/// let c = brain_ldm_synth::draw_covariates(0, 5)?;
/// assert!((44.0..=82.0).contains(&c.age));
/// assert_eq!(c, brain_ldm_synth::draw_covariates(0, 5)?);
/// # Ok::<(), brain_ldm_synth::SynthError>(())
/// ```
pub fn draw_covariates(seed: u64, index: u64) -> Result<Covariates> {
    let stats = template()?.stats;
    let mut rng = stream(seed, index, Stream::Covariates);
    let sex = if rand::Rng::random::<f64>(&mut rng) < P_MALE {
        Sex::Male
    } else {
        Sex::Female
    };
    let male = sex == Sex::Male;
    let age = truncated(
        &mut rng,
        AGE_MEAN_SD.0,
        AGE_MEAN_SD.1,
        AGE_RANGE.0,
        AGE_RANGE.1,
    );
    let mean_scale = if male {
        HEAD_SCALE_MEAN.1
    } else {
        HEAD_SCALE_MEAN.0
    };
    let z = truncated(&mut rng, 0.0, 1.0, -3.0, 3.0);
    let head_scale = mean_scale * (HEAD_SCALE_LOG_SD * z).exp();
    let vol_scale = head_scale.powi(3);
    let dage = age - AGE_MEAN_SD.0;
    let log_v = (VENTRICLE_MEDIAN * vol_scale).ln()
        + VENTRICLE_PER_YEAR * dage
        + if male { VENTRICLE_MALE } else { 0.0 };
    let ventricular_volume = truncated(
        &mut rng,
        log_v,
        VENTRICLE_LOG_SD,
        VENTRICLE_RANGE.0.ln(),
        VENTRICLE_RANGE.1.ln(),
    )
    .exp();
    let (a0, a_year, a_sd, (a_lo, a_hi)) = ATROPHY;
    let atrophy = truncated(&mut rng, a0 + a_year * dage, a_sd, a_lo, a_hi);
    let icv = stats.mask * vol_scale;
    let vent_growth = (ventricular_volume - stats.ventricles * vol_scale).max(0.0);
    let brain_volume = (stats.brain / stats.mask - atrophy) * icv - vent_growth;
    Ok(Covariates {
        sex,
        age,
        head_scale,
        ventricular_volume,
        brain_volume,
    })
}

//! What the denoiser predicts, and the conversions between its output, the clean-sample
//! estimate `x̂_0` and the noise estimate `ε̂` at a timestep with cumulative product `ᾱ_t`.

use std::fmt;
use std::str::FromStr;

use candle_core::Tensor;

use crate::tensor_ops::lin2;
use crate::{Error, Result};

/// The denoiser's target (MONAI's `DDPMPredictionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PredictionType {
    /// The noise `ε` (MONAI's default; the brain-LDM bundle's).
    #[default]
    Epsilon,
    /// The clean sample `x_0`.
    Sample,
    /// The velocity `v = sqrt(ᾱ_t)·ε − sqrt(1 − ᾱ_t)·x_0` (Salimans & Ho, arXiv 2202.00512).
    VPrediction,
}

impl PredictionType {
    /// MONAI's name (`epsilon`, `sample`, `v_prediction`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Epsilon => "epsilon",
            Self::Sample => "sample",
            Self::VPrediction => "v_prediction",
        }
    }

    /// The clean-sample estimate `x̂_0` from the model output at a timestep with cumulative
    /// product `alpha_prod_t`, with `sample` the current `x_t`.
    ///
    /// epsilon: `(x_t − sqrt(1 − ᾱ)·out)/sqrt(ᾱ)`; sample: `out`; v_prediction:
    /// `sqrt(ᾱ)·x_t − sqrt(1 − ᾱ)·out`.
    ///
    /// # Shapes
    /// `model_output` and `sample` of one shape, and one float dtype.
    ///
    /// # Errors
    /// A candle error when the shapes or dtypes differ.
    pub fn pred_original_sample(
        self,
        model_output: &Tensor,
        sample: &Tensor,
        alpha_prod_t: f64,
    ) -> Result<Tensor> {
        let (sa, sb) = (alpha_prod_t.sqrt(), (1.0 - alpha_prod_t).sqrt());
        match self {
            // Subtract first, then scale (as MONAI): at small ᾱ the difference is amplified
            // by 1/sqrt(ᾱ), and scaling first would amplify the rounding of both terms.
            Self::Epsilon => Ok(((sample - (model_output * sb)?)? / sa)?),
            Self::Sample => Ok(model_output.clone()),
            Self::VPrediction => lin2(sa, sample, -sb, model_output),
        }
    }

    /// The noise estimate `ε̂` from the model output (see
    /// [`PredictionType::pred_original_sample`]); for `sample` it is computed from the
    /// unclipped `out`: `(x_t − sqrt(ᾱ)·out)/sqrt(1 − ᾱ)`; for v_prediction
    /// `sqrt(ᾱ)·out + sqrt(1 − ᾱ)·x_t`.
    ///
    /// # Errors
    /// A candle error when the shapes or dtypes differ.
    pub fn pred_epsilon(
        self,
        model_output: &Tensor,
        sample: &Tensor,
        alpha_prod_t: f64,
    ) -> Result<Tensor> {
        let (sa, sb) = (alpha_prod_t.sqrt(), (1.0 - alpha_prod_t).sqrt());
        match self {
            Self::Epsilon => Ok(model_output.clone()),
            Self::Sample => Ok(((sample - (model_output * sa)?)? / sb)?),
            Self::VPrediction => lin2(sa, model_output, sb, sample),
        }
    }
}

impl fmt::Display for PredictionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PredictionType {
    type Err = Error;

    /// Parses `epsilon`, `sample` or `v_prediction` (alias `v`).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "epsilon" => Ok(Self::Epsilon),
            "sample" => Ok(Self::Sample),
            "v_prediction" | "v" => Ok(Self::VPrediction),
            other => Err(Error::UnknownName {
                kind: "prediction type",
                name: other.to_string(),
                expected: "epsilon, sample, v_prediction",
            }),
        }
    }
}

/// Optional clipping of the clean-sample estimate `x̂_0` (MONAI's `clip_sample`,
/// `clip_sample_min`, `clip_sample_max`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ClipSample {
    /// No clipping (latent diffusion: latents are not bounded).
    #[default]
    None,
    /// Clamp `x̂_0` to `[min, max]` (MONAI's default when `clip_sample` is true: `[-1, 1]`).
    Range {
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
    },
}

impl ClipSample {
    /// MONAI's default clipping, `[-1, 1]`.
    pub const MONAI_DEFAULT: Self = Self::Range {
        min: -1.0,
        max: 1.0,
    };

    /// `x` clamped to the range, or `x` itself.
    ///
    /// # Errors
    /// A candle error from the clamp.
    pub fn apply(self, x: Tensor) -> Result<Tensor> {
        match self {
            Self::None => Ok(x),
            Self::Range { min, max } => Ok(x.clamp(min, max)?),
        }
    }

    pub(crate) fn validate(self) -> Result<()> {
        match self {
            Self::Range { min, max } if min.partial_cmp(&max).is_none_or(|o| o.is_gt()) => {
                Err(Error::InvalidConfig {
                    field: "clip_sample_min",
                    reason: format!("clip range [{min}, {max}] is empty"),
                })
            }
            _ => Ok(()),
        }
    }
}

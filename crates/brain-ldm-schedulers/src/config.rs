//! Deserialising scheduler configurations from MONAI's constructor arguments.
//!
//! Every scheduler config deserialises from the JSON object of MONAI's keyword arguments
//! (as in a bundle's `configs/*.json`), e.g.
//! `{"num_train_timesteps": 1000, "schedule": "scaled_linear_beta", "beta_start": 0.0015,
//! "beta_end": 0.0205, "clip_sample": false}`. Missing keys take MONAI's defaults; keys the
//! scheduler does not know (`_target_`, …) are ignored; a schedule parameter the chosen
//! schedule does not take is an error, as it is in MONAI. The enum-valued options
//! (`prediction_type`, `variance_type`, `timestep_spacing`, …) are parsed with their
//! [`std::str::FromStr`] implementations.

use std::str::FromStr;

use serde::Deserialize;

use crate::{BetaSchedule, ClipSample, Error, NoiseScheduleConfig, Result};

/// The union of the keyword arguments of MONAI's (and diffusers') schedulers.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct MonaiArgs {
    pub num_train_timesteps: Option<usize>,
    #[serde(alias = "beta_schedule")]
    pub schedule: Option<String>,
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub sig_range: Option<f64>,
    pub s: Option<f64>,
    pub clip_sample: Option<bool>,
    pub clip_sample_min: Option<f64>,
    pub clip_sample_max: Option<f64>,
    pub set_alpha_to_one: Option<bool>,
    pub steps_offset: Option<usize>,
    pub prediction_type: Option<String>,
    pub variance_type: Option<String>,
    pub skip_prk_steps: Option<bool>,
    pub eta: Option<f64>,
    pub timestep_spacing: Option<String>,
    pub solver_order: Option<usize>,
    pub solver_type: Option<String>,
    pub lower_order_final: Option<bool>,
    pub final_sigmas_type: Option<String>,
}

impl MonaiArgs {
    /// The noise schedule: `schedule` (default `linear_beta`) with the given parameters.
    pub fn noise_schedule(&self) -> Result<NoiseScheduleConfig> {
        let mut schedule = match &self.schedule {
            Some(name) => BetaSchedule::from_str(name)?,
            None => NoiseScheduleConfig::default().schedule,
        };
        let name = schedule.name();
        let not_taken = |field: &'static str| Error::InvalidConfig {
            field,
            reason: format!("not a parameter of the {name} schedule"),
        };
        match &mut schedule {
            BetaSchedule::LinearBeta {
                beta_start,
                beta_end,
            }
            | BetaSchedule::ScaledLinearBeta {
                beta_start,
                beta_end,
            } => {
                if self.sig_range.is_some() {
                    return Err(not_taken("sig_range"));
                }
                if self.s.is_some() {
                    return Err(not_taken("s"));
                }
                *beta_start = self.beta_start.unwrap_or(*beta_start);
                *beta_end = self.beta_end.unwrap_or(*beta_end);
            }
            BetaSchedule::SigmoidBeta {
                beta_start,
                beta_end,
                sig_range,
            } => {
                if self.s.is_some() {
                    return Err(not_taken("s"));
                }
                *beta_start = self.beta_start.unwrap_or(*beta_start);
                *beta_end = self.beta_end.unwrap_or(*beta_end);
                *sig_range = self.sig_range.unwrap_or(*sig_range);
            }
            BetaSchedule::Cosine { s } => {
                if self.beta_start.is_some() {
                    return Err(not_taken("beta_start"));
                }
                if self.beta_end.is_some() {
                    return Err(not_taken("beta_end"));
                }
                if self.sig_range.is_some() {
                    return Err(not_taken("sig_range"));
                }
                *s = self.s.unwrap_or(*s);
            }
        }
        Ok(NoiseScheduleConfig {
            num_train_timesteps: self.num_train_timesteps.unwrap_or(1000),
            schedule,
        })
    }

    /// Clipping from `clip_sample` (default `default_on`), `clip_sample_min` (−1) and
    /// `clip_sample_max` (1).
    pub fn clip(&self, default_on: bool) -> ClipSample {
        if self.clip_sample.unwrap_or(default_on) {
            ClipSample::Range {
                min: self.clip_sample_min.unwrap_or(-1.0),
                max: self.clip_sample_max.unwrap_or(1.0),
            }
        } else {
            ClipSample::None
        }
    }

    /// An optional enum-valued option parsed with `FromStr`, or `default`.
    pub fn parse<T: FromStr<Err = Error>>(value: &Option<String>, default: T) -> Result<T> {
        value.as_deref().map_or(Ok(default), T::from_str)
    }
}

/// Implements `Deserialize` for a config through [`MonaiArgs`] and a
/// `fn from_monai_args(MonaiArgs) -> Result<Self>`.
macro_rules! deserialize_via_monai_args {
    ($ty:ty) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(
                deserializer: D,
            ) -> std::result::Result<Self, D::Error> {
                let args = crate::config::MonaiArgs::deserialize(deserializer)?;
                <$ty>::from_monai_args(args).map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use deserialize_via_monai_args;

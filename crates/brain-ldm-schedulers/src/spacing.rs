//! Timestep spacing: which `n` of the `T` training timesteps a sampler visits.
//!
//! The spacing changed across MONAI versions, so it is explicit here:
//!
//! | spacing | definition (`T` train steps, `n` inference steps, offset `o`) | `T = 1000, n = 50` | used by |
//! | --- | --- | --- | --- |
//! | [`TimestepSpacing::Linspace`] | `round(linspace(T − 1 − o, 0, n)) + o` (round half to even) | 999, 979, 958, …, 20, 0 | MONAI ≥ 1.5 DDPM/DDIM (the default here) |
//! | [`TimestepSpacing::Leading`] | `reverse(arange(n)·⌊T/n⌋) + o` | 980, 960, …, 20, 0 | MONAI GenerativeModels 0.2 / MONAI 1.4; the brain-LDM bundle |
//! | [`TimestepSpacing::Trailing`] | `round(T − i·T/n) − 1`, `i = 0..n` (offset ignored) | 999, 979, …, 39, 19 | diffusers `timestep_spacing="trailing"` |

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// How the inference timesteps are chosen among the training timesteps (see the module
/// documentation for the exact definitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TimestepSpacing {
    /// MONAI 1.6 (`linspace`, rounded): starts at `T − 1`, ends at `steps_offset`.
    #[default]
    Linspace,
    /// GenerativeModels 0.2 "leading": multiples of `⌊T/n⌋` from 0, plus `steps_offset`;
    /// 50 steps of 1000 give 980, 960, …, 0. The public brain-LDM bundle samples with it.
    Leading,
    /// diffusers "trailing": ends the grid at `T − 1` and spaces it by `T/n` downwards;
    /// `steps_offset` does not apply.
    Trailing,
}

impl TimestepSpacing {
    /// The name used in configurations (`linspace`, `leading`, `trailing`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Linspace => "linspace",
            Self::Leading => "leading",
            Self::Trailing => "trailing",
        }
    }

    /// The `n` inference timesteps, in sampling order (decreasing).
    ///
    /// # Errors
    /// [`Error::InvalidInferenceSteps`] unless `1 ≤ n ≤ T`; [`Error::InvalidConfig`] when
    /// `steps_offset ≥ T`; [`Error::TimestepOutOfRange`] when the offset pushes a
    /// [`TimestepSpacing::Leading`] grid past `T − 1`.
    ///
    /// ```
    /// use brain_ldm_schedulers::TimestepSpacing;
    /// let leading = TimestepSpacing::Leading.timesteps(1000, 50, 0)?;
    /// assert_eq!(&leading[..3], &[980, 960, 940]);
    /// assert_eq!(leading.last(), Some(&0));
    /// let linspace = TimestepSpacing::Linspace.timesteps(1000, 50, 0)?;
    /// assert_eq!(&linspace[..3], &[999, 979, 958]);
    /// let trailing = TimestepSpacing::Trailing.timesteps(1000, 50, 0)?;
    /// assert_eq!((trailing[0], trailing[49]), (999, 19));
    /// # Ok::<(), brain_ldm_schedulers::Error>(())
    /// ```
    pub fn timesteps(
        self,
        num_train_timesteps: usize,
        num_inference_steps: usize,
        steps_offset: usize,
    ) -> Result<Vec<usize>> {
        let (t, n, o) = (num_train_timesteps, num_inference_steps, steps_offset);
        if n == 0 || n > t {
            return Err(Error::InvalidInferenceSteps {
                requested: n,
                min: 1,
                max: t,
            });
        }
        if o >= t {
            return Err(Error::InvalidConfig {
                field: "steps_offset",
                reason: format!("{o} must be in 0..{t}"),
            });
        }
        let grid: Vec<usize> = match self {
            Self::Linspace => crate::linspace((t - 1 - o) as f64, 0.0, n)
                .into_iter()
                .map(|v| v.round_ties_even() as usize + o)
                .collect(),
            Self::Leading => {
                let ratio = t / n;
                (0..n).rev().map(|i| i * ratio + o).collect()
            }
            Self::Trailing => {
                let ratio = t as f64 / n as f64;
                (0..n)
                    .map(|i| (t as f64 - i as f64 * ratio).round_ties_even() as usize - 1)
                    .collect()
            }
        };
        if let Some(&bad) = grid.iter().find(|&&v| v >= t) {
            return Err(Error::TimestepOutOfRange {
                timestep: bad as i64,
                num_train_timesteps: t,
            });
        }
        Ok(grid)
    }
}

impl fmt::Display for TimestepSpacing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TimestepSpacing {
    type Err = Error;

    /// Parses `linspace` (alias `monai`), `leading` (alias `generative`) or `trailing`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "linspace" | "monai" => Ok(Self::Linspace),
            "leading" | "generative" => Ok(Self::Leading),
            "trailing" => Ok(Self::Trailing),
            other => Err(Error::UnknownName {
                kind: "timestep spacing",
                name: other.to_string(),
                expected: "linspace (monai), leading (generative), trailing",
            }),
        }
    }
}

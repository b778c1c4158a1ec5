//! PNDM (Liu et al., arXiv 2202.09778): a Runge–Kutta warm-up (PRK) then a 4th-order linear
//! multistep method (PLMS), as MONAI's `PNDMScheduler`.

use candle_core::Tensor;

use crate::config::{deserialize_via_monai_args, MonaiArgs};
use crate::tensor_ops::{check_shape, compute_dtype};
use crate::{
    Error, NoiseSchedule, NoiseScheduleConfig, PredictionType, Result, Scheduler, StepOutput,
    TimestepSpacing,
};

/// Configuration of [`PNDMScheduler`]; deserialises from MONAI's `PNDMScheduler` arguments
/// (see [`crate::config`]).
///
/// PNDM always uses GenerativeModels' leading spacing ([`TimestepSpacing::Leading`]) plus
/// `steps_offset`, as MONAI does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PNDMConfig {
    /// Training timesteps and beta schedule.
    pub noise_schedule: NoiseScheduleConfig,
    /// Skip the Runge–Kutta warm-up and start multistep at once (PLMS; Stable Diffusion's
    /// choice). MONAI default false.
    pub skip_prk_steps: bool,
    /// Use `ᾱ = 1` after the last step (MONAI default false: `ᾱ_0`).
    pub set_alpha_to_one: bool,
    /// What the model predicts. MONAI accepts epsilon and v_prediction; `sample` is converted
    /// to a noise estimate the same way.
    pub prediction_type: PredictionType,
    /// Offset added to the inference grid.
    pub steps_offset: usize,
}

impl Default for PNDMConfig {
    /// MONAI's defaults: `linear_beta` 1e-4..2e-2 over 1000 steps, with the PRK warm-up,
    /// `set_alpha_to_one` false, epsilon, offset 0.
    fn default() -> Self {
        Self {
            noise_schedule: NoiseScheduleConfig::default(),
            skip_prk_steps: false,
            set_alpha_to_one: false,
            prediction_type: PredictionType::default(),
            steps_offset: 0,
        }
    }
}

impl PNDMConfig {
    fn from_monai_args(args: MonaiArgs) -> Result<Self> {
        Ok(Self {
            noise_schedule: args.noise_schedule()?,
            skip_prk_steps: args.skip_prk_steps.unwrap_or(false),
            set_alpha_to_one: args.set_alpha_to_one.unwrap_or(false),
            prediction_type: MonaiArgs::parse(&args.prediction_type, PredictionType::default())?,
            steps_offset: args.steps_offset.unwrap_or(0),
        })
    }
}

deserialize_via_monai_args!(PNDMConfig);

/// The PNDM sampler (F-PNDM: Runge–Kutta warm-up, then PLMS), as MONAI lays it out.
///
/// With `n` inference steps and `r = ⌊T/n⌋`, the grid is the leading one,
/// `0, r, …, (n−1)·r` (+ offset). Without `skip_prk_steps` the first 12 evaluations are the
/// PRK warm-up over the top 3 intervals (timesteps listed twice at half-steps
/// `r/2`), followed by PLMS over the remaining `n − 3` grid points: `n + 9` evaluations in all
/// (n ≥ 4). With `skip_prk_steps` there are `n` evaluations.
///
/// One deliberate difference from MONAI 1.6.1: MONAI overwrites `num_inference_steps` with the
/// length of the evaluation list (`n + 9`) and then steps by `⌊T/(n + 9)⌋` in PRK mode, which
/// leaves the samples partly noised (on a Gaussian toy problem, 20 steps: mean 0.78 and std
/// 0.63 instead of 1.0 and 0.5). Here both modes step by `⌊T/n⌋`, the paper's and diffusers'
/// step; with `skip_prk_steps` the two coincide and this matches MONAI.
///
/// [`StepOutput::pred_original_sample`] is the estimate `x̂_0` from the step's own model
/// output at the step's timestep (MONAI returns none).
#[derive(Debug, Clone)]
pub struct PNDMScheduler {
    config: PNDMConfig,
    schedule: NoiseSchedule,
    final_alpha_cumprod: f64,
    step_ratio: usize,
    prk_timesteps: Vec<usize>,
    timesteps: Vec<usize>,
    counter: usize,
    ets: Vec<Tensor>,
    cur_model_output: Option<Tensor>,
    cur_sample: Option<Tensor>,
}

/// PNDM's order (F-PNDM).
const PNDM_ORDER: usize = 4;

impl PNDMScheduler {
    /// A scheduler with `num_train_timesteps` inference steps (MONAI's initial state).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an invalid schedule or `steps_offset ≥ T`.
    pub fn new(config: PNDMConfig) -> Result<Self> {
        let schedule = config.noise_schedule.build()?;
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            schedule.alphas_cumprod()[0]
        };
        let mut scheduler = Self {
            config,
            schedule,
            final_alpha_cumprod,
            step_ratio: 1,
            prk_timesteps: Vec::new(),
            timesteps: Vec::new(),
            counter: 0,
            ets: Vec::new(),
            cur_model_output: None,
            cur_sample: None,
        };
        scheduler.set_timesteps(config.noise_schedule.num_train_timesteps)?;
        Ok(scheduler)
    }

    /// The configuration.
    pub fn config(&self) -> &PNDMConfig {
        &self.config
    }

    /// `x_{prev}` from `x_t` and a noise estimate, formula (9) of the PNDM paper.
    fn prev_sample(
        &self,
        sample: &Tensor,
        timestep: usize,
        prev_timestep: i64,
        model_output: &Tensor,
    ) -> Result<Tensor> {
        let alpha_prod_t = self.schedule.alpha_cumprod(timestep)?;
        let alpha_prod_prev = if prev_timestep >= 0 {
            self.schedule.alpha_cumprod(prev_timestep as usize)?
        } else {
            self.final_alpha_cumprod
        };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_prev = 1.0 - alpha_prod_prev;
        let eps = self
            .config
            .prediction_type
            .pred_epsilon(model_output, sample, alpha_prod_t)?;
        let sample_coeff = (alpha_prod_prev / alpha_prod_t).sqrt();
        let denom = alpha_prod_t * beta_prod_prev.sqrt()
            + (alpha_prod_t * beta_prod_t * alpha_prod_prev).sqrt();
        crate::tensor_ops::lin2(
            sample_coeff,
            sample,
            -(alpha_prod_prev - alpha_prod_t) / denom,
            &eps,
        )
    }

    /// One Runge–Kutta evaluation (MONAI's `step_prk`).
    fn step_prk(
        &mut self,
        model_output: Tensor,
        timestep: usize,
        sample: Tensor,
    ) -> Result<Tensor> {
        let diff_to_prev = if self.counter % 2 == 1 {
            0
        } else {
            self.step_ratio / 2
        };
        let prev_timestep = timestep as i64 - diff_to_prev as i64;
        let block_timestep = self.prk_timesteps[self.counter / 4 * 4];
        let model_output = match self.counter % 4 {
            0 => {
                self.cur_model_output = Some((&model_output / 6.0)?);
                self.ets.push(model_output.clone());
                self.cur_sample = Some(sample.clone());
                model_output
            }
            1 | 2 => {
                let third = (&model_output / 3.0)?;
                self.cur_model_output = Some(match self.cur_model_output.take() {
                    Some(acc) => (acc + third)?,
                    None => third,
                });
                model_output
            }
            _ => {
                let sixth = (model_output / 6.0)?;
                match self.cur_model_output.take() {
                    Some(acc) => (acc + sixth)?,
                    None => sixth,
                }
            }
        };
        let cur_sample = self.cur_sample.clone().unwrap_or(sample);
        let prev = self.prev_sample(&cur_sample, block_timestep, prev_timestep, &model_output)?;
        self.counter += 1;
        Ok(prev)
    }

    /// One linear-multistep evaluation (MONAI's `step_plms`).
    fn step_plms(
        &mut self,
        model_output: Tensor,
        timestep: usize,
        sample: Tensor,
    ) -> Result<Tensor> {
        let ratio = self.step_ratio;
        let (mut timestep, mut prev_timestep) = (timestep, timestep as i64 - ratio as i64);
        if self.counter != 1 {
            let keep = self.ets.len().saturating_sub(3);
            self.ets.drain(..keep);
            self.ets.push(model_output.clone());
        } else {
            prev_timestep = timestep as i64;
            timestep += ratio;
        }
        let e = &self.ets;
        let n = e.len();
        let mut sample = sample;
        let model_output = match (n, self.counter) {
            (1, 0) => {
                self.cur_sample = Some(sample.clone());
                model_output
            }
            (1, 1) => {
                let mixed = ((model_output + &e[0])? / 2.0)?;
                if let Some(first) = self.cur_sample.take() {
                    sample = first;
                }
                mixed
            }
            (2, _) => (((&e[1] * 3.0)? - &e[0])? / 2.0)?,
            (3, _) => ((((&e[2] * 23.0)? - (&e[1] * 16.0)?)? + (&e[0] * 5.0)?)? / 12.0)?,
            _ => {
                let sum = ((((&e[n - 1] * 55.0)? - (&e[n - 2] * 59.0)?)? + (&e[n - 3] * 37.0)?)?
                    - (&e[n - 4] * 9.0)?)?;
                (sum / 24.0)?
            }
        };
        let prev = self.prev_sample(&sample, timestep, prev_timestep, &model_output)?;
        self.counter += 1;
        Ok(prev)
    }
}

impl Scheduler for PNDMScheduler {
    fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.config.prediction_type
    }

    /// # Errors
    /// [`Error::InvalidInferenceSteps`] unless `n ≤ T` and `n ≥ 4` (with the PRK warm-up)
    /// or `n ≥ 1` (without); [`Error::TimestepOutOfRange`] when the offset pushes the grid
    /// past `T − 1`.
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let t = self.schedule.num_train_timesteps();
        let n = num_inference_steps;
        let min = if self.config.skip_prk_steps {
            1
        } else {
            PNDM_ORDER
        };
        if n < min || n > t {
            return Err(Error::InvalidInferenceSteps {
                requested: n,
                min,
                max: t,
            });
        }
        // Decreasing leading grid; MONAI builds it increasing, so reverse.
        let mut grid = TimestepSpacing::Leading.timesteps(t, n, self.config.steps_offset)?;
        grid.reverse();
        let ratio = t / n;
        let (prk, plms): (Vec<usize>, Vec<usize>) = if self.config.skip_prk_steps {
            (Vec::new(), grid.iter().rev().copied().collect())
        } else {
            // [v0, v0 + r/2, v1, v1 + r/2, …] over the last 4 grid points, minus the last
            // entry, every entry twice, minus the first and last: 12 entries, reversed.
            let half = ratio / 2;
            let pairs: Vec<usize> = grid[n - PNDM_ORDER..]
                .iter()
                .flat_map(|&v| [v, v + half])
                .collect();
            let doubled: Vec<usize> = pairs[..pairs.len() - 1]
                .iter()
                .flat_map(|&v| [v, v])
                .collect();
            let prk: Vec<usize> = doubled[1..doubled.len() - 1]
                .iter()
                .rev()
                .copied()
                .collect();
            (prk, grid[..n - 3].iter().rev().copied().collect())
        };
        if let Some(&bad) = prk.iter().find(|&&v| v >= t) {
            return Err(Error::TimestepOutOfRange {
                timestep: bad as i64,
                num_train_timesteps: t,
            });
        }
        self.step_ratio = ratio;
        self.timesteps = prk.iter().chain(plms.iter()).copied().collect();
        self.prk_timesteps = prk;
        self.counter = 0;
        self.ets.clear();
        self.cur_model_output = None;
        self.cur_sample = None;
        Ok(())
    }

    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: usize,
        sample: &Tensor,
        _noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        let index = self.counter;
        let expected = *self.timesteps.get(index).ok_or(Error::ScheduleFinished {
            num_steps: self.timesteps.len(),
        })?;
        if timestep != expected {
            return Err(Error::UnexpectedTimestep {
                index,
                expected,
                got: timestep,
            });
        }
        let dtype = compute_dtype("sample", sample.dtype())?;
        check_shape("model_output", sample.dims(), model_output)?;
        let x = sample.to_dtype(dtype)?;
        let out = model_output.to_dtype(dtype)?;
        let pred_original = self.config.prediction_type.pred_original_sample(
            &out,
            &x,
            self.schedule.alpha_cumprod(timestep)?,
        )?;
        let prev = if index < self.prk_timesteps.len() {
            self.step_prk(out, timestep, x)?
        } else {
            self.step_plms(out, timestep, x)?
        };
        Ok(StepOutput {
            prev_sample: prev.to_dtype(sample.dtype())?,
            pred_original_sample: pred_original.to_dtype(sample.dtype())?,
        })
    }
}

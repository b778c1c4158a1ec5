//! Optimisation: named parameters, Adam/AdamW with exportable state, gradient accumulation
//! and global-norm clipping, learning-rate warm-up and decay, EMA weights.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

/// A model's trainable tensors in a fixed order (sorted by name), so that optimiser state,
/// gradients and checkpoints line up on every run.
#[derive(Debug, Clone)]
pub struct Parameters {
    names: Vec<String>,
    vars: Vec<Var>,
}

impl Parameters {
    /// The trainable variables of `varmap`, sorted by name: all but batch-norm buffers
    /// (`running_mean`, `running_var`, `num_batches_tracked`), which PyTorch does not train
    /// by gradient either.
    pub fn from_varmap(varmap: &VarMap) -> Self {
        let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        let mut pairs: Vec<(String, Var)> = data
            .iter()
            .filter(|(k, _)| !is_buffer(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let (names, vars) = pairs.into_iter().unzip();
        Self { names, vars }
    }

    /// The parameter names (MONAI state-dict keys), sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The variables, in the order of [`names`](Self::names).
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// Number of scalar weights.
    pub fn num_elements(&self) -> usize {
        self.vars.iter().map(|v| v.elem_count()).sum()
    }

    /// The gradient of each parameter in `grads` (`None` where the parameter took no part).
    pub fn gradients(&self, grads: &GradStore) -> Gradients {
        Gradients(
            self.vars
                .iter()
                .map(|v| grads.get(v.as_tensor()).cloned())
                .collect(),
        )
    }

    /// A copy of the current values by name (detached from the variables).
    ///
    /// # Errors
    /// A candle error from the copy.
    pub fn snapshot(&self) -> Result<HashMap<String, Tensor>> {
        self.names
            .iter()
            .zip(&self.vars)
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().copy()?.detach())))
            .collect()
    }

    /// Sets every parameter from `tensors` (by name).
    ///
    /// # Errors
    /// A candle error naming the missing or mis-shaped key.
    pub fn load(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for (name, var) in self.names.iter().zip(&self.vars) {
            let t = tensors.get(name).ok_or_else(|| {
                candle_core::Error::Msg(format!("no tensor for parameter {name}"))
            })?;
            if t.dims() != var.dims() {
                candle_core::bail!(
                    "parameter {name}: shape {:?}, expected {:?}",
                    t.dims(),
                    var.dims()
                );
            }
            var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        Ok(())
    }
}

/// Whether `name` is a batch-norm buffer rather than a weight.
pub fn is_buffer(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    matches!(last, "running_mean" | "running_var" | "num_batches_tracked")
}

/// Gradients aligned with a [`Parameters`] list.
#[derive(Debug, Clone)]
pub struct Gradients(pub Vec<Option<Tensor>>);

impl Gradients {
    /// Adds `other` (gradient accumulation over micro-batches).
    ///
    /// # Errors
    /// A candle error when the lists do not line up.
    pub fn accumulate(&mut self, other: Gradients) -> Result<()> {
        if self.0.len() != other.0.len() {
            candle_core::bail!("gradient lists of {} and {}", self.0.len(), other.0.len());
        }
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a = match (a.take(), b) {
                (Some(x), Some(y)) => Some((x + y)?),
                (x, None) => x,
                (None, y) => y,
            };
        }
        Ok(())
    }

    /// Multiplies every gradient by `factor`.
    ///
    /// # Errors
    /// A candle error from the tensor operations.
    pub fn scale(&mut self, factor: f64) -> Result<()> {
        for g in self.0.iter_mut().flatten() {
            *g = (&*g * factor)?;
        }
        Ok(())
    }

    /// The global L2 norm over every gradient (f64).
    ///
    /// # Errors
    /// A candle error from the tensor operations.
    pub fn global_norm(&self) -> Result<f64> {
        let mut total = 0f64;
        for g in self.0.iter().flatten() {
            total += g
                .to_dtype(candle_core::DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?;
        }
        Ok(total.sqrt())
    }

    /// Scales the gradients so that their global norm is at most `max_norm`, as PyTorch's
    /// `clip_grad_norm_` (factor `max_norm / (norm + 1e-6)` when that is below 1). Returns the
    /// norm before clipping.
    ///
    /// # Errors
    /// A candle error from the tensor operations.
    pub fn clip_global_norm(&mut self, max_norm: f64) -> Result<f64> {
        let norm = self.global_norm()?;
        let factor = max_norm / (norm + 1e-6);
        if factor < 1.0 {
            self.scale(factor)?;
        }
        Ok(norm)
    }
}

/// Hyper-parameters of [`AdamW`]: PyTorch's `torch.optim.AdamW` (and `Adam` with
/// `weight_decay = 0`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    /// Learning rate (the peak, after warm-up).
    pub lr: f64,
    /// `(beta1, beta2)`.
    pub betas: (f64, f64),
    /// Added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay (`w ← w·(1 − lr·weight_decay)` before the Adam update).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// PyTorch's Adam defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, no weight decay.
    fn default() -> Self {
        Self {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Adam with decoupled weight decay, computing exactly what PyTorch's `AdamW` (and `Adam`
/// with `weight_decay = 0`) computes, with its state (moments and per-parameter step
/// counts) readable and restorable so that a resumed run continues exactly.
///
/// candle-nn's `AdamW` computes the same update but keeps its moments private, so a run could
/// not be resumed from a checkpoint; `tests/optim.rs` holds the two equal. As in PyTorch, a
/// parameter without a gradient is skipped (no decay, no moment update, its step count
/// unchanged).
///
/// Per parameter with gradient `g` at its step `t`:
/// `w ← w·(1 − lr·λ)`; `m ← β₁m + (1 − β₁)g`; `v ← β₂v + (1 − β₂)g²`;
/// `w ← w − lr/(1 − β₁ᵗ) · m / (sqrt(v)/sqrt(1 − β₂ᵗ) + eps)`.
#[derive(Debug)]
pub struct AdamW {
    params: Parameters,
    config: AdamWConfig,
    lr: f64,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    steps: Vec<u64>,
}

impl AdamW {
    /// A fresh optimiser (zero moments) over `params`.
    ///
    /// # Errors
    /// A candle error when the moments cannot be allocated.
    pub fn new(params: Parameters, config: AdamWConfig) -> Result<Self> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        let m = params.vars.iter().map(zeros).collect::<Result<Vec<_>>>()?;
        let v = params.vars.iter().map(zeros).collect::<Result<Vec<_>>>()?;
        let steps = vec![0; m.len()];
        Ok(Self {
            params,
            lr: config.lr,
            config,
            m,
            v,
            steps,
        })
    }

    /// The parameters it updates.
    pub fn parameters(&self) -> &Parameters {
        &self.params
    }

    /// The learning rate of the next step.
    pub fn learning_rate(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate of the next step (warm-up, decay).
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// One update with `grads` (aligned with the parameters).
    ///
    /// # Errors
    /// A candle error when a gradient does not fit its parameter.
    pub fn step(&mut self, grads: &Gradients) -> Result<()> {
        if grads.0.len() != self.params.vars.len() {
            candle_core::bail!(
                "{} gradients for {} parameters",
                grads.0.len(),
                self.params.vars.len()
            );
        }
        let (b1, b2) = self.config.betas;
        let lr = self.lr;
        for (i, g) in grads.0.iter().enumerate() {
            let Some(g) = g else { continue };
            let var = &self.params.vars[i];
            self.steps[i] += 1;
            let t = self.steps[i] as i32;
            let bc1 = 1.0 - b1.powi(t);
            let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
            let g = g.to_dtype(var.dtype())?;
            let m = ((&self.m[i] * b1)? + (&g * (1.0 - b1))?)?;
            let v = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let mut w = var.as_tensor().detach();
            if self.config.weight_decay != 0.0 {
                w = (w * (1.0 - lr * self.config.weight_decay))?;
            }
            let denom = ((v.sqrt()? / bc2_sqrt)? + self.config.eps)?;
            let w = (w - ((&m / denom)? * (lr / bc1))?)?;
            var.set(&w)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// The state as tensors (`m.<name>`, `v.<name>`) and per-parameter step counts (by name).
    pub fn state(&self) -> (HashMap<String, Tensor>, HashMap<String, u64>) {
        let mut tensors = HashMap::new();
        let mut steps = HashMap::new();
        for (i, name) in self.params.names.iter().enumerate() {
            tensors.insert(format!("m.{name}"), self.m[i].clone());
            tensors.insert(format!("v.{name}"), self.v[i].clone());
            steps.insert(name.clone(), self.steps[i]);
        }
        (tensors, steps)
    }

    /// Restores a state written by [`state`](Self::state).
    ///
    /// # Errors
    /// A candle error naming a missing or mis-shaped entry.
    pub fn load_state(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        steps: &HashMap<String, u64>,
    ) -> Result<()> {
        for (i, name) in self.params.names.iter().enumerate() {
            let var = &self.params.vars[i];
            for (prefix, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("{prefix}.{name}");
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| candle_core::Error::Msg(format!("no optimiser state {key}")))?;
                if t.dims() != var.dims() {
                    candle_core::bail!(
                        "optimiser state {key}: shape {:?}, expected {:?}",
                        t.dims(),
                        var.dims()
                    );
                }
                *slot = t.to_dtype(var.dtype())?.to_device(var.device())?;
            }
            self.steps[i] = *steps.get(name).ok_or_else(|| {
                candle_core::Error::Msg(format!("no optimiser step count for {name}"))
            })?;
        }
        Ok(())
    }
}

/// How the learning rate evolves after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrDecay {
    /// Constant at the peak.
    #[default]
    Constant,
    /// Half a cosine from the peak down to `min_lr` at the last step.
    Cosine,
}

/// Linear warm-up from `peak/warmup_steps` to `peak` over `warmup_steps` steps, then constant
/// or cosine decay to `min_lr` at `total_steps`.
///
/// ```
/// use brain_ldm_train::optim::{learning_rate, LrDecay};
/// assert_eq!(learning_rate(1e-3, 0, 4, 100, LrDecay::Constant, 0.0), 2.5e-4);
/// assert_eq!(learning_rate(1e-3, 50, 4, 100, LrDecay::Constant, 0.0), 1e-3);
/// assert!(learning_rate(1e-3, 99, 0, 100, LrDecay::Cosine, 0.0) < 1e-5);
/// ```
pub fn learning_rate(
    peak: f64,
    step: u64,
    warmup_steps: u64,
    total_steps: u64,
    decay: LrDecay,
    min_lr: f64,
) -> f64 {
    if step < warmup_steps {
        return peak * (step + 1) as f64 / warmup_steps as f64;
    }
    match decay {
        LrDecay::Constant => peak,
        LrDecay::Cosine => {
            let span = total_steps.saturating_sub(warmup_steps).max(1) as f64;
            let progress = ((step - warmup_steps) as f64 / span).min(1.0);
            min_lr + 0.5 * (peak - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}

/// Exponential moving average of a model's weights: `ema ← decay·ema + (1 − decay)·w` after
/// every optimiser step.
#[derive(Debug, Clone)]
pub struct Ema {
    decay: f64,
    shadow: Vec<Tensor>,
}

impl Ema {
    /// Starts the average at the current weights.
    ///
    /// # Errors
    /// A candle error from the copy.
    pub fn new(params: &Parameters, decay: f64) -> Result<Self> {
        let shadow = params
            .vars
            .iter()
            .map(|v| Ok(v.as_tensor().copy()?.detach()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { decay, shadow })
    }

    /// Moves the average towards the current weights.
    ///
    /// # Errors
    /// A candle error from the tensor operations.
    pub fn update(&mut self, params: &Parameters) -> Result<()> {
        for (s, v) in self.shadow.iter_mut().zip(&params.vars) {
            *s = ((&*s * self.decay)? + (v.as_tensor().detach() * (1.0 - self.decay))?)?;
        }
        Ok(())
    }

    /// The averaged weights by parameter name.
    pub fn tensors(&self, params: &Parameters) -> HashMap<String, Tensor> {
        params
            .names
            .iter()
            .cloned()
            .zip(self.shadow.iter().cloned())
            .collect()
    }

    /// Restores the average from tensors by name.
    ///
    /// # Errors
    /// A candle error naming a missing or mis-shaped tensor.
    pub fn load(&mut self, params: &Parameters, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for ((name, slot), var) in params
            .names
            .iter()
            .zip(self.shadow.iter_mut())
            .zip(&params.vars)
        {
            let t = tensors
                .get(name)
                .ok_or_else(|| candle_core::Error::Msg(format!("no EMA tensor for {name}")))?;
            if t.dims() != var.dims() {
                candle_core::bail!(
                    "EMA {name}: shape {:?}, expected {:?}",
                    t.dims(),
                    var.dims()
                );
            }
            *slot = t.to_dtype(var.dtype())?.to_device(var.device())?;
        }
        Ok(())
    }
}

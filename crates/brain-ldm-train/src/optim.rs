//! Optimisation: named parameters, Adam/AdamW with exportable state, gradient accumulation
//! and global-norm clipping, learning-rate warm-up and decay, EMA weights.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Layout, Result, Storage, Tensor, Var};
use candle_nn::VarMap;
use rayon::prelude::*;
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

    /// Multiplies every gradient by `factor` (nothing to do for 1).
    ///
    /// # Errors
    /// A candle error from the tensor operations.
    pub fn scale(&mut self, factor: f64) -> Result<()> {
        if factor == 1.0 {
            return Ok(());
        }
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
            let k = AdamWCoefficients {
                b1,
                b2,
                decay: 1.0 - lr * self.config.weight_decay,
                eps: self.config.eps,
                inv_bc2_sqrt: 1.0 / (1.0 - b2.powi(t)).sqrt(),
                lr_bc1: lr / (1.0 - b1.powi(t)),
            };
            let g = g.to_dtype(var.dtype())?;
            let w = var.as_tensor();
            let (w, m, v) = match fused_update(w, &g, &self.m[i], &self.v[i], &k)? {
                Some(updated) => updated,
                None => composed_update(w, &g, &self.m[i], &self.v[i], &k)?,
            };
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

/// The scalars of one AdamW update of a parameter at its step `t`.
struct AdamWCoefficients {
    b1: f64,
    b2: f64,
    /// `1 − lr·λ` (1 without weight decay).
    decay: f64,
    eps: f64,
    /// `1 / sqrt(1 − β₂ᵗ)`.
    inv_bc2_sqrt: f64,
    /// `lr / (1 − β₁ᵗ)`.
    lr_bc1: f64,
}

/// The update as tensor operations (any device and dtype): new `(w, m, v)`.
fn composed_update(
    w: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    k: &AdamWCoefficients,
) -> Result<(Tensor, Tensor, Tensor)> {
    let m = ((m * k.b1)? + (g * (1.0 - k.b1))?)?;
    let v = ((v * k.b2)? + (g.sqr()? * (1.0 - k.b2))?)?;
    let mut w = w.detach();
    if k.decay != 1.0 {
        w = (w * k.decay)?;
    }
    let denom = ((v.sqrt()? * k.inv_bc2_sqrt)? + k.eps)?;
    let w = (w - ((&m / denom)? * k.lr_bc1)?)?;
    Ok((w, m, v))
}

/// The same update in one pass over contiguous f32 CPU tensors, with the same f32
/// operations in the same order as [`composed_update`] (candle's scalar multiply and add are
/// `x·a + b` in the tensor's dtype), so both give the same bits; `None` for other tensors.
fn fused_update(
    w: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    k: &AdamWCoefficients,
) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    let (ws, wl) = w.storage_and_layout();
    let (gs, gl) = g.storage_and_layout();
    let (ms, ml) = m.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (Some(w0), Some(g), Some(m0), Some(v0)) = (
        f32_slice(&ws, wl),
        f32_slice(&gs, gl),
        f32_slice(&ms, ml),
        f32_slice(&vs, vl),
    ) else {
        return Ok(None);
    };
    if g.len() != w0.len() || m0.len() != w0.len() || v0.len() != w0.len() {
        candle_core::bail!(
            "AdamW: gradient of {} values for a parameter of {}",
            g.len(),
            w0.len()
        );
    }
    let f = |x: f64| x as f32;
    let (b1, c1, b2, c2) = (f(k.b1), f(1.0 - k.b1), f(k.b2), f(1.0 - k.b2));
    let (decay, inv_bc2, eps, lr_bc1) = (f(k.decay), f(k.inv_bc2_sqrt), f(k.eps), f(k.lr_bc1));
    let n = w0.len();
    // Written whole below, so not zeroed first (zeroing was 1 % of a UNet training step:
    // docs/benchmarks.md, "Training step").
    let (mut w1, mut m1, mut v1) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    const CHUNK: usize = 1 << 14;
    w1.spare_capacity_mut()[..n]
        .par_chunks_mut(CHUNK)
        .zip(m1.spare_capacity_mut()[..n].par_chunks_mut(CHUNK))
        .zip(v1.spare_capacity_mut()[..n].par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(c, ((wo, mo), vo))| {
            let at = c * CHUNK;
            for j in 0..wo.len() {
                let (gi, i) = (g[at + j], at + j);
                let mi = (m0[i] * b1 + 0.0) + (gi * c1 + 0.0);
                let vi = (v0[i] * b2 + 0.0) + ((gi * gi) * c2 + 0.0);
                let wi = if k.decay != 1.0 {
                    w0[i] * decay + 0.0
                } else {
                    w0[i]
                };
                let denom = (vi.sqrt() * inv_bc2 + 0.0) * 1.0 + eps;
                wo[j].write(wi - ((mi / denom) * lr_bc1 + 0.0));
                mo[j].write(mi);
                vo[j].write(vi);
            }
        });
    // SAFETY: the chunks cover the first n elements of each, every one written above.
    unsafe {
        w1.set_len(n);
        m1.set_len(n);
        v1.set_len(n);
    }
    let shape = w.shape();
    let dev = w.device();
    Ok(Some((
        Tensor::from_vec(w1, shape, dev)?,
        Tensor::from_vec(m1, shape, dev)?,
        Tensor::from_vec(v1, shape, dev)?,
    )))
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

/// The values of a contiguous f32 CPU tensor's storage; `None` for any other.
fn f32_slice<'a>(storage: &'a Storage, layout: &Layout) -> Option<&'a [f32]> {
    let Storage::Cpu(cpu) = storage else {
        return None;
    };
    let (start, end) = layout.contiguous_offsets()?;
    Some(&cpu.as_slice::<f32>().ok()?[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// The one-pass CPU update gives the bits of the tensor-operation update (which other
    /// devices use), with and without weight decay, on a length that is not a multiple of
    /// the chunk size.
    #[test]
    fn fused_update_equals_composed_update() {
        let dev = Device::Cpu;
        let n = (1 << 14) * 2 + 37;
        let r = |seed: u64| {
            Tensor::rand(-1f32, 1f32, n, &dev).and_then(|t| t.affine(1.0 + seed as f64, 0.0))
        };
        let (w, g, m) = (r(0).unwrap(), r(1).unwrap(), r(2).unwrap());
        let v = r(3).unwrap().sqr().unwrap();
        for (t, decay) in [(1, 1.0), (7, 1.0 - 3e-4 * 1e-2)] {
            let k = AdamWCoefficients {
                b1: 0.9,
                b2: 0.999,
                decay,
                eps: 1e-8,
                inv_bc2_sqrt: 1.0 / (1.0 - 0.999f64.powi(t)).sqrt(),
                lr_bc1: 3e-4 / (1.0 - 0.9f64.powi(t)),
            };
            let fused = fused_update(&w, &g, &m, &v, &k).unwrap().unwrap();
            let composed = composed_update(&w, &g, &m, &v, &k).unwrap();
            for (a, b) in [
                (fused.0, composed.0),
                (fused.1, composed.1),
                (fused.2, composed.2),
            ] {
                let bits = |t: Tensor| -> Vec<u32> {
                    t.to_vec1::<f32>()
                        .unwrap()
                        .iter()
                        .map(|x| x.to_bits())
                        .collect()
                };
                assert_eq!(bits(a), bits(b));
            }
        }
        let f64_param = w.to_dtype(DType::F64).unwrap();
        let k = AdamWCoefficients {
            b1: 0.9,
            b2: 0.999,
            decay: 1.0,
            eps: 1e-8,
            inv_bc2_sqrt: 1.0,
            lr_bc1: 1.0,
        };
        assert!(
            fused_update(&f64_param, &f64_param, &f64_param, &f64_param, &k)
                .unwrap()
                .is_none()
        );
    }
}

//! MONAI's `PatchDiscriminator` (Pix2PixHD patch GAN), used to train the autoencoder.

use crate::error::{AutoencoderError, Result};
use brain_ldm_nn::checkpoint::Checkpoint;
use brain_ldm_nn::{Conv3d, Conv3dConfig, GroupNorm};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::path::Path;

/// An activation as MONAI names it: `"LEAKYRELU"` or `["LEAKYRELU", {"negative_slope": 0.2}]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// `LEAKYRELU` (PyTorch's default slope 0.01).
    LeakyRelu {
        /// Slope for negative inputs.
        negative_slope: f64,
    },
    /// `RELU`.
    Relu,
    /// `SWISH` / `SILU` (β = 1).
    Silu,
    /// `GELU` (exact, erf).
    Gelu,
    /// `TANH`.
    Tanh,
    /// `SIGMOID`.
    Sigmoid,
}

impl Activation {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::LeakyRelu { negative_slope } => {
                x.relu()? - (x.neg()?.relu()? * *negative_slope)?
            }
            Activation::Relu => x.relu(),
            Activation::Silu => candle_nn::ops::silu(x),
            Activation::Gelu => x.gelu_erf(),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => candle_nn::ops::sigmoid(x),
        }
    }
}

/// The feature normalisation of the discriminator's layers, as MONAI names it: `"BATCH"`,
/// `["INSTANCE", {"affine": true}]`, `["GROUP", {"num_groups": 8}]`, or `null` for none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NormKind {
    /// No normalisation.
    None,
    /// `BATCH`: `torch.nn.BatchNorm3d` (learned affine, running statistics).
    Batch {
        /// Epsilon (default 1e-5).
        eps: f64,
    },
    /// `INSTANCE`: `torch.nn.InstanceNorm3d`, per sample and channel (no running statistics).
    Instance {
        /// Epsilon (default 1e-5).
        eps: f64,
        /// Learned per-channel gain and shift (default false, as PyTorch).
        affine: bool,
    },
    /// `GROUP`: `torch.nn.GroupNorm`.
    Group {
        /// Number of groups (required).
        num_groups: usize,
        /// Epsilon (default 1e-5).
        eps: f64,
    },
}

/// Splits MONAI's `"NAME"` / `["NAME", {args}]` form.
fn name_and_args(
    v: Value,
) -> std::result::Result<(String, serde_json::Map<String, Value>), String> {
    match v {
        Value::String(s) => Ok((s.to_ascii_uppercase(), Default::default())),
        Value::Array(mut a) if a.len() == 2 => {
            let args = match a.pop() {
                Some(Value::Object(m)) => m,
                other => return Err(format!("expected an argument object, got {other:?}")),
            };
            match a.pop() {
                Some(Value::String(s)) => Ok((s.to_ascii_uppercase(), args)),
                other => Err(format!("expected a name, got {other:?}")),
            }
        }
        other => Err(format!(
            "expected \"NAME\" or [\"NAME\", {{args}}], got {other}"
        )),
    }
}

fn arg_f64(
    args: &serde_json::Map<String, Value>,
    key: &str,
    default: f64,
) -> std::result::Result<f64, String> {
    match args.get(key) {
        None => Ok(default),
        Some(v) => v
            .as_f64()
            .ok_or_else(|| format!("{key} must be a number, got {v}")),
    }
}

impl<'de> Deserialize<'de> for Activation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let parse = |v: Value| -> std::result::Result<Self, String> {
            let (name, args) = name_and_args(v)?;
            Ok(match name.as_str() {
                "LEAKYRELU" => Activation::LeakyRelu {
                    negative_slope: arg_f64(&args, "negative_slope", 0.01)?,
                },
                "RELU" => Activation::Relu,
                "SWISH" | "SILU" => Activation::Silu,
                "GELU" => Activation::Gelu,
                "TANH" => Activation::Tanh,
                "SIGMOID" => Activation::Sigmoid,
                other => return Err(format!("unsupported activation {other}")),
            })
        };
        parse(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for NormKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let parse = |v: Value| -> std::result::Result<Self, String> {
            if v.is_null() {
                return Ok(NormKind::None);
            }
            let (name, args) = name_and_args(v)?;
            let eps = arg_f64(&args, "eps", 1e-5)?;
            Ok(match name.as_str() {
                "BATCH" => NormKind::Batch { eps },
                "INSTANCE" => NormKind::Instance {
                    eps,
                    affine: args.get("affine").and_then(Value::as_bool).unwrap_or(false),
                },
                "GROUP" => NormKind::Group {
                    num_groups: args
                        .get("num_groups")
                        .and_then(Value::as_u64)
                        .ok_or("GROUP norm needs num_groups")?
                        as usize,
                    eps,
                },
                other => return Err(format!("unsupported norm {other}")),
            })
        };
        parse(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Configuration of [`PatchDiscriminator`]: the arguments of MONAI's
/// `monai.networks.nets.PatchDiscriminator`, with its defaults.
///
/// ```
/// use brain_ldm_autoencoder::{Activation, NormKind, PatchDiscriminatorConfig};
/// let cfg: PatchDiscriminatorConfig = serde_json::from_str(
///     r#"{"spatial_dims": 3, "num_layers_d": 3, "channels": 96, "in_channels": 1}"#,
/// ).unwrap();
/// assert_eq!(cfg.activation, Activation::LeakyRelu { negative_slope: 0.2 });
/// assert_eq!(cfg.norm, NormKind::Batch { eps: 1e-5 });
/// assert_eq!((cfg.kernel_size, cfg.padding, cfg.bias), (4, 1, false));
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PatchDiscriminatorConfig {
    /// Number of spatial dimensions; only 3 is supported.
    pub spatial_dims: usize,
    /// Filters of the first convolution, doubled at every following layer.
    #[serde(alias = "num_channels")]
    pub channels: usize,
    /// Image channels in.
    pub in_channels: usize,
    /// Channels of the logits (default 1).
    #[serde(default = "one")]
    pub out_channels: usize,
    /// Convolution + norm + activation layers after the first (default 3); all but the last
    /// have stride 2.
    #[serde(default = "three")]
    pub num_layers_d: usize,
    /// Kernel size of every convolution (default 4).
    #[serde(default = "four")]
    pub kernel_size: usize,
    /// Activation (default `["LEAKYRELU", {"negative_slope": 0.2}]`).
    #[serde(default = "default_activation")]
    pub activation: Activation,
    /// Normalisation of the middle layers (default `"BATCH"`).
    #[serde(default = "default_norm")]
    pub norm: NormKind,
    /// Bias in the middle layers' convolutions (default false).
    #[serde(default)]
    pub bias: bool,
    /// Zero padding of every convolution but the last (default 1).
    #[serde(default = "one")]
    pub padding: usize,
    /// Dropout probability after each norm: identity at inference (as MONAI in eval mode).
    #[serde(default)]
    pub dropout: f64,
    /// Kernel size of the last convolution (default `kernel_size`); its padding is
    /// `(k − 1) / 2`.
    #[serde(default)]
    pub last_conv_kernel_size: Option<usize>,
}

fn one() -> usize {
    1
}
fn three() -> usize {
    3
}
fn four() -> usize {
    4
}
fn default_activation() -> Activation {
    Activation::LeakyRelu {
        negative_slope: 0.2,
    }
}
fn default_norm() -> NormKind {
    NormKind::Batch { eps: 1e-5 }
}

impl PatchDiscriminatorConfig {
    /// Parses the JSON of the constructor arguments and validates them.
    ///
    /// # Errors
    /// [`AutoencoderError::ConfigJson`], [`AutoencoderError::InvalidConfig`].
    pub fn from_json(json: &str) -> Result<Self> {
        let cfg: Self =
            serde_json::from_str(json).map_err(|source| AutoencoderError::ConfigJson { source })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what MONAI or PyTorch would reject.
    ///
    /// # Errors
    /// [`AutoencoderError::InvalidConfig`] naming the problem.
    pub fn validate(&self) -> Result<()> {
        let fail = |reason: String| Err(AutoencoderError::InvalidConfig { reason });
        if self.spatial_dims != 3 {
            return fail(format!("spatial_dims must be 3, got {}", self.spatial_dims));
        }
        if self.channels == 0 || self.in_channels == 0 || self.out_channels == 0 {
            return fail("channels, in_channels and out_channels must be positive".into());
        }
        if self.kernel_size == 0 || self.last_conv_kernel_size == Some(0) {
            return fail("kernel sizes must be positive".into());
        }
        if !(0.0..=1.0).contains(&self.dropout) {
            return fail(format!("dropout must be in [0, 1], got {}", self.dropout));
        }
        if let NormKind::Group { num_groups, .. } = self.norm {
            let widest = self.channels << self.num_layers_d;
            if num_groups == 0
                || (0..self.num_layers_d)
                    .any(|l| !(self.channels << (l + 1)).is_multiple_of(num_groups))
            {
                return fail(format!(
                    "GROUP norm: {num_groups} groups must divide every layer's channels (up to {widest})"
                ));
            }
        }
        Ok(())
    }
}

/// A layer's normalisation with its parameters.
#[derive(Debug, Clone)]
enum Norm {
    None,
    Batch {
        weight: Tensor,
        bias: Tensor,
        running_mean: Tensor,
        running_var: Tensor,
        eps: f64,
    },
    Instance {
        affine: Option<(Tensor, Tensor)>,
        eps: f64,
    },
    Group(GroupNorm),
}

/// Per-channel `x·scale + shift` with `[c]` vectors.
fn channel_affine(x: &Tensor, scale: &Tensor, shift: &Tensor) -> candle_core::Result<Tensor> {
    let shape = (1, scale.dim(0)?, 1, 1, 1);
    x.broadcast_mul(&scale.reshape(shape)?)?
        .broadcast_add(&shift.reshape(shape)?)
}

/// `(x − mean) / sqrt(var + eps)` with statistics over `axes` (kept).
fn normalise(x: &Tensor, axes: &[usize], eps: f64) -> candle_core::Result<Tensor> {
    let mean = x.mean_keepdim(axes)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(axes)?;
    centred.broadcast_div(&(var + eps)?.sqrt()?)
}

impl Norm {
    fn new(kind: NormKind, c: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        use candle_nn::Init::Const;
        Ok(match kind {
            NormKind::None => Norm::None,
            NormKind::Batch { eps } => {
                // Registered by PyTorch; not used in the computation.
                vb.get_with_hints((), "num_batches_tracked", Const(0.0))?;
                Norm::Batch {
                    weight: vb.get_with_hints(c, "weight", Const(1.0))?,
                    bias: vb.get_with_hints(c, "bias", Const(0.0))?,
                    running_mean: vb.get_with_hints(c, "running_mean", Const(0.0))?,
                    running_var: vb.get_with_hints(c, "running_var", Const(1.0))?,
                    eps,
                }
            }
            NormKind::Instance { eps, affine } => Norm::Instance {
                affine: if affine {
                    Some((
                        vb.get_with_hints(c, "weight", Const(1.0))?,
                        vb.get_with_hints(c, "bias", Const(0.0))?,
                    ))
                } else {
                    None
                },
                eps,
            },
            NormKind::Group { num_groups, eps } => Norm::Group(GroupNorm::new(
                vb.get_with_hints(c, "weight", Const(1.0))?,
                vb.get_with_hints(c, "bias", Const(0.0))?,
                num_groups,
                eps,
            )?),
        })
    }

    /// The same norm with learned parameters that carry no gradient.
    fn detached(&self) -> Self {
        match self {
            Norm::None => Norm::None,
            Norm::Batch {
                weight,
                bias,
                running_mean,
                running_var,
                eps,
            } => Norm::Batch {
                weight: weight.detach(),
                bias: bias.detach(),
                running_mean: running_mean.clone(),
                running_var: running_var.clone(),
                eps: *eps,
            },
            Norm::Instance { affine, eps } => Norm::Instance {
                affine: affine.as_ref().map(|(w, b)| (w.detach(), b.detach())),
                eps: *eps,
            },
            Norm::Group(g) => Norm::Group(g.detached()),
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            Norm::None => Ok(x.clone()),
            Norm::Batch {
                weight,
                bias,
                running_mean,
                running_var,
                eps,
            } => {
                if train {
                    channel_affine(&normalise(x, &[0, 2, 3, 4], *eps)?, weight, bias)
                } else {
                    let scale = (weight / (running_var + *eps)?.sqrt()?)?;
                    let shift = (bias - (running_mean * &scale)?)?;
                    channel_affine(x, &scale, &shift)
                }
            }
            Norm::Instance { affine, eps } => {
                let y = normalise(x, &[2, 3, 4], *eps)?;
                match affine {
                    Some((w, b)) => channel_affine(&y, w, b),
                    None => Ok(y),
                }
            }
            Norm::Group(g) => g.forward(x),
        }
    }
}

/// MONAI's `Convolution` block: conv, then norm, dropout, activation (order `NDA`).
#[derive(Debug, Clone)]
struct Layer {
    conv: Conv3d,
    norm: Norm,
    act: Option<Activation>,
}

impl Layer {
    /// The same layer with weights that carry no gradient.
    fn detached(&self) -> Self {
        let conv = &self.conv;
        Self {
            conv: Conv3d::new(
                conv.weight().detach(),
                conv.bias().map(Tensor::detach),
                *conv.config(),
            ),
            norm: self.norm.detached(),
            act: self.act,
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = self.norm.forward(&self.conv.forward(x)?, train)?;
        match &self.act {
            Some(a) => a.forward(&y),
            None => Ok(y),
        }
    }
}

fn conv_layer(
    c_in: usize,
    c_out: usize,
    k: usize,
    cfg: Conv3dConfig,
    bias: bool,
    vb: VarBuilder,
) -> candle_core::Result<Conv3d> {
    let vb = vb.pp("conv");
    let weight = vb.get_with_hints(
        (c_out, c_in, k, k, k),
        "weight",
        candle_nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        },
    )?;
    let bias = if bias {
        Some(vb.get_with_hints(c_out, "bias", candle_nn::Init::Const(0.0))?)
    } else {
        None
    };
    Ok(Conv3d::new(weight, bias, cfg))
}

/// MONAI's 3D `PatchDiscriminator`: a stride-2 convolution with activation, `num_layers_d`
/// convolution + norm + activation layers (channels doubling, stride 2 but the last), and a
/// final convolution to the logits.
///
/// Keys are MONAI's: `initial_conv.conv.*`, `N.conv.weight`, `N.adn.N.*` (the norm),
/// `final_conv.conv.*`.
///
/// ```
/// use brain_ldm_autoencoder::{PatchDiscriminator, PatchDiscriminatorConfig};
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
///
/// let cfg = PatchDiscriminatorConfig::from_json(
///     r#"{"spatial_dims": 3, "channels": 4, "in_channels": 1, "num_layers_d": 2}"#,
/// )?;
/// let vars = VarMap::new();
/// let d = PatchDiscriminator::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu))?;
/// let outs = d.forward(&Tensor::zeros((1, 1, 16, 16, 16), DType::F32, &Device::Cpu)?)?;
/// assert_eq!(outs.len(), 4); // initial, 2 layers, logits
/// // 16 → 8 (initial, stride 2) → 4 (stride 2) → 3 (last layer, stride 1) → 2 (logits).
/// assert_eq!(outs.last().unwrap().dims(), &[1, 1, 2, 2, 2]);
/// # Ok::<(), brain_ldm_autoencoder::AutoencoderError>(())
/// ```
#[derive(Debug, Clone)]
pub struct PatchDiscriminator {
    layers: Vec<Layer>,
    in_channels: usize,
}

impl PatchDiscriminator {
    /// Builds the discriminator from `vb` (MONAI's state-dict names), or initialises it on a
    /// `VarMap` (convolutions N(0, 0.02), norms 1/0, as MONAI's `normal_init` roughly does).
    ///
    /// # Errors
    /// An invalid configuration, or a missing or mis-shaped weight (the error names the key).
    pub fn new(config: &PatchDiscriminatorConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        config.validate().map_err(candle_core::Error::wrap)?;
        let k = config.kernel_size;
        let pad = config.padding;
        let act = Some(config.activation);
        let mut layers = vec![Layer {
            conv: conv_layer(
                config.in_channels,
                config.channels,
                k,
                Conv3dConfig::new(pad, 2),
                true,
                vb.pp("initial_conv"),
            )?,
            norm: Norm::None,
            act,
        }];
        let mut c_in = config.channels;
        for l in 0..config.num_layers_d {
            let c_out = c_in * 2;
            let stride = if l + 1 == config.num_layers_d { 1 } else { 2 };
            let vb = vb.pp(l);
            layers.push(Layer {
                conv: conv_layer(
                    c_in,
                    c_out,
                    k,
                    Conv3dConfig::new(pad, stride),
                    config.bias,
                    vb.clone(),
                )?,
                norm: Norm::new(config.norm, c_out, vb.pp("adn").pp("N"))?,
                act,
            });
            c_in = c_out;
        }
        let last_k = config.last_conv_kernel_size.unwrap_or(k);
        layers.push(Layer {
            conv: conv_layer(
                c_in,
                config.out_channels,
                last_k,
                Conv3dConfig::new((last_k - 1) / 2, 1),
                true,
                vb.pp("final_conv"),
            )?,
            norm: Norm::None,
            act: None,
        });
        Ok(Self {
            layers,
            in_channels: config.in_channels,
        })
    }

    /// The same discriminator with weights that carry no gradient (sharing their storage):
    /// a loss through it backpropagates to its input only, as the generator's adversarial
    /// term needs, without computing the weight gradients.
    pub fn detached(&self) -> Self {
        Self {
            layers: self.layers.iter().map(Layer::detached).collect(),
            in_channels: self.in_channels,
        }
    }

    /// Loads a checkpoint file (safetensors or PyTorch pickle, MONAI's names) onto `device`
    /// in f32, checking that every key fits.
    ///
    /// # Errors
    /// [`AutoencoderError::InvalidConfig`], [`AutoencoderError::Checkpoint`].
    pub fn load(
        path: impl AsRef<Path>,
        config: &PatchDiscriminatorConfig,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let checkpoint = Checkpoint::load(path, device)?;
        Ok(checkpoint.build(DType::F32, |vb| Self::new(config, vb))?)
    }

    /// The outputs of every layer, the logits last (MONAI's `forward`), with batch norms
    /// using their running statistics (PyTorch's eval mode).
    ///
    /// # Errors
    /// [`AutoencoderError::InputShape`] when `x` is not `[b, in_channels, d, h, w]`;
    /// a candle error when the volume is too small for the layers.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        self.forward_t(x, false)
    }

    /// As [`PatchDiscriminator::forward`]; with `train`, batch norms normalise with the
    /// statistics of the batch (PyTorch's train mode; running statistics are not updated).
    ///
    /// # Errors
    /// As [`PatchDiscriminator::forward`].
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        if x.rank() != 5 || x.dim(1)? != self.in_channels {
            return Err(AutoencoderError::InputShape {
                what: "discriminator input",
                expected: format!("[batch, {}, depth, height, width]", self.in_channels),
                got: x.dims().to_vec(),
            });
        }
        let mut outs: Vec<Tensor> = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let input = outs.last().unwrap_or(x);
            let y = layer.forward(input, train)?;
            outs.push(y);
        }
        Ok(outs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_norm_train_mode_uses_batch_statistics() {
        let dev = Device::Cpu;
        let vars = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &dev);
        let norm = Norm::new(NormKind::Batch { eps: 1e-5 }, 3, vb).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 3, 4, 4, 4), &dev)
            .unwrap()
            .affine(5.0, 7.0)
            .unwrap();
        let y = norm.forward(&x, true).unwrap();
        let mean = y
            .mean_keepdim(&[0, 2, 3, 4][..])
            .unwrap()
            .flatten_all()
            .unwrap();
        let var = y
            .sqr()
            .unwrap()
            .mean_keepdim(&[0, 2, 3, 4][..])
            .unwrap()
            .flatten_all()
            .unwrap();
        for (m, v) in mean
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .zip(var.to_vec1::<f32>().unwrap())
        {
            assert!(
                m.abs() < 1e-5 && (v - 1.0).abs() < 1e-3,
                "mean {m}, var {v}"
            );
        }
        // Eval mode with the initial running statistics (0, 1) leaves x (almost) unchanged.
        let e = norm.forward(&x, false).unwrap();
        let diff = (e - &x)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-3, "{diff}");
    }

    /// A loss through the detached discriminator reaches its input with the same gradient
    /// and none of its weights (every kind of norm).
    #[test]
    fn detached_passes_the_input_gradient_only() {
        let dev = Device::Cpu;
        for norm in [
            r#""BATCH""#,
            r#"["INSTANCE", {"affine": true}]"#,
            r#"["GROUP", {"num_groups": 2}]"#,
        ] {
            let cfg = PatchDiscriminatorConfig::from_json(&format!(
                r#"{{"spatial_dims": 3, "channels": 4, "in_channels": 1, "num_layers_d": 2, "norm": {norm}}}"#
            ))
            .unwrap();
            let vars = candle_nn::VarMap::new();
            let d = PatchDiscriminator::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, &dev))
                .unwrap();
            let x = candle_core::Var::from_tensor(
                &Tensor::randn(0f32, 1.0, (1, 1, 16, 16, 16), &dev).unwrap(),
            )
            .unwrap();
            let backward = |d: &PatchDiscriminator| {
                let logits = d.forward_t(x.as_tensor(), true).unwrap().pop().unwrap();
                logits.sqr().unwrap().sum_all().unwrap().backward().unwrap()
            };
            let (full, frozen) = (backward(&d), backward(&d.detached()));
            let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(
                values(frozen.get(x.as_tensor()).unwrap()),
                values(full.get(x.as_tensor()).unwrap()),
                "{norm}"
            );
            for (name, var) in vars.data().lock().unwrap().iter() {
                assert!(
                    full.get(var.as_tensor()).is_some()
                        || name.contains("running")
                        || name.contains("num_batches"),
                    "{norm}: {name}"
                );
                assert!(frozen.get(var.as_tensor()).is_none(), "{norm}: {name}");
            }
        }
    }
}

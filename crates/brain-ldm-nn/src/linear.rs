//! The fully connected layer `y = x·Wᵀ + b`, with its bias added by
//! [`add_channel_bias`](crate::ops::add_channel_bias).

use crate::bias::add_channel_bias;
use candle_core::{Module, Result, Tensor};
use candle_nn::{init, Init, VarBuilder};

/// A fully connected layer, `y = x·Wᵀ + b`: candle-nn's `Linear` with the same weights, keys
/// and initialisation, but its bias added by [`add_channel_bias`](crate::ops::add_channel_bias),
/// whose gradient sums the rows in parallel where candle's `broadcast_add` sums them on one
/// thread.
///
/// # Shapes
/// `weight`: `[out, in]`; `bias`: `[out]`; input `[…, in]` (any rank ≥ 1) → `[…, out]`.
///
/// ```
/// use candle_core::{Device, Module, Tensor};
/// let w = Tensor::new(&[[1f32, 2.], [3., 4.], [5., 6.]], &Device::Cpu)?;
/// let b = Tensor::new(&[1f32, 0., -1.], &Device::Cpu)?;
/// let layer = brain_ldm_nn::Linear::new(w, Some(b));
/// let y = layer.forward(&Tensor::new(&[[10f32, 100.]], &Device::Cpu)?)?;
/// assert_eq!(y.to_vec2::<f32>()?, [[211.0, 430.0, 649.0]]);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// A layer with `weight` `[out, in]` and an optional `bias` `[out]`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    /// The weight, `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, `[out]`, if the layer has one.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Module for Linear {
    /// `x·Wᵀ + b` over the last axis of `x`: the leading axes are flattened to rows (made
    /// contiguous), multiplied by `Wᵀ` in one matrix product, and reshaped back.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let Some((&in_dim, leading)) = dims.split_last() else {
            // A scalar: candle's own error.
            return x.matmul(&self.weight.t()?);
        };
        let rows = leading.iter().product::<usize>();
        let y = x
            .contiguous()?
            .reshape((rows, in_dim))?
            .matmul(&self.weight.t()?)?;
        let y = match &self.bias {
            Some(bias) => add_channel_bias(&y, bias)?,
            None => y,
        };
        let mut out_dims = leading.to_vec();
        out_dims.push(y.dim(1)?);
        y.reshape(out_dims)
    }
}

/// A [`Linear`] layer with a bias, from `vb`'s `weight` `[out_dim, in_dim]` and `bias`
/// `[out_dim]`; on a `VarMap`, initialised as candle-nn's `linear` does (Kaiming-normal
/// weight, bias uniform in ±1/√in_dim).
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get_with_hints((out_dim, in_dim), "weight", init::DEFAULT_KAIMING_NORMAL)?;
    let bound = 1. / (in_dim as f64).sqrt();
    let bias = vb.get_with_hints(
        out_dim,
        "bias",
        Init::Uniform {
            lo: -bound,
            up: bound,
        },
    )?;
    Ok(Linear::new(weight, Some(bias)))
}

/// A [`Linear`] layer without a bias, from `vb`'s `weight` `[out_dim, in_dim]`; on a
/// `VarMap`, initialised as candle-nn's `linear_no_bias` does (Kaiming-normal).
pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get_with_hints((out_dim, in_dim), "weight", init::DEFAULT_KAIMING_NORMAL)?;
    Ok(Linear::new(weight, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    fn max_abs(a: &Tensor) -> Result<f32> {
        a.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    /// The same forward floats as candle-nn's `Linear` up to f32 rounding and gradients for
    /// the input, weight and bias within 1e-5 relative, for rank 1, 2 and 3 inputs (one of them
    /// strided), with and without a bias.
    #[test]
    fn matches_candle_nn_linear() -> Result<()> {
        let dev = &Device::Cpu;
        let (in_dim, out_dim) = (24, 40);
        let inputs = [
            Tensor::randn(0f32, 1.0, in_dim, dev)?,
            Tensor::randn(0f32, 1.0, (70, in_dim), dev)?,
            Tensor::randn(0f32, 1.0, (3, 37, in_dim), dev)?,
            // Non-contiguous: [2, 19, in] from [19, 2, in].
            Tensor::randn(0f32, 1.0, (19, 2, in_dim), dev)?.transpose(0, 1)?,
            // Non-contiguous rank 2: [33, in] from [in, 33].
            Tensor::randn(0f32, 1.0, (in_dim, 33), dev)?.t()?,
        ];
        for with_bias in [true, false] {
            for input in &inputs {
                let weight = Var::from_tensor(&Tensor::randn(0f32, 1.0, (out_dim, in_dim), dev)?)?;
                let bias = Var::from_tensor(&Tensor::randn(0f32, 1.0, out_dim, dev)?)?;
                let x = Var::from_tensor(&input.contiguous()?)?;
                let x_in = if input.is_contiguous() {
                    x.as_tensor().clone()
                } else {
                    // The same strides as `input`, still tracked to `x`.
                    match input.rank() {
                        2 => x.t()?.contiguous()?.t()?,
                        _ => x.transpose(0, 1)?.contiguous()?.transpose(0, 1)?,
                    }
                };
                assert_eq!(x_in.is_contiguous(), input.is_contiguous());
                let b = with_bias.then(|| bias.as_tensor().clone());
                let ours = Linear::new(weight.as_tensor().clone(), b.clone());
                let theirs = candle_nn::Linear::new(weight.as_tensor().clone(), b);
                let got = ours.forward(&x_in)?;
                let want = if input.rank() == 1 {
                    // candle-nn needs a batch axis.
                    theirs.forward(&x_in.unsqueeze(0)?)?.squeeze(0)?
                } else {
                    theirs.forward(&x_in)?
                };
                assert_eq!(got.dims(), want.dims());
                let tol = 1e-6 * max_abs(&want)?.max(1.0);
                assert!(max_diff(&got, &want)? <= tol, "{:?}", input.dims());
                let upstream = Tensor::randn(0f32, 1.0, want.dims(), dev)?;
                let got_grads = (got * &upstream)?.sum_all()?.backward()?;
                let want_grads = (want * &upstream)?.sum_all()?.backward()?;
                let mut vars = vec![&x, &weight];
                if with_bias {
                    vars.push(&bias);
                }
                for v in vars {
                    let (g, w) = (got_grads.get(v).unwrap(), want_grads.get(v).unwrap());
                    assert_eq!(g.dims(), w.dims());
                    // candle sums the bias gradient in f32 one row after another; ours adds
                    // f64 block sums, so they differ by candle's rounding, relative to the sums.
                    let tol = 1e-5 * max_abs(w)?.max(1.0);
                    let diff = max_diff(g, w)?;
                    assert!(diff <= tol, "{:?} {:?}: {diff}", input.dims(), v.dims());
                }
                assert_eq!(got_grads.get(&bias).is_some(), with_bias);
            }
        }
        Ok(())
    }

    /// Records every tensor requested: key, shape and initialisation hint.
    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<(String, Vec<usize>, String)>>);

    impl candle_nn::var_builder::SimpleBackend for &Recorder {
        fn get(
            &self,
            s: candle_core::Shape,
            name: &str,
            init: Init,
            dtype: DType,
            dev: &Device,
        ) -> Result<Tensor> {
            let hint = format!("{init:?}");
            let entry = (name.to_string(), s.dims().to_vec(), hint);
            self.0.lock().unwrap().push(entry);
            Tensor::zeros(s, dtype, dev)
        }
        fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
            candle_core::bail!("unexpected unchecked request for {name}")
        }
        fn contains_tensor(&self, _: &str) -> bool {
            true
        }
    }

    /// The same keys, shapes and initialisation hints as candle-nn's constructors.
    #[test]
    fn constructors_match_candle_nn() -> Result<()> {
        let requests = |build: &dyn Fn(VarBuilder) -> Result<()>| {
            let recorder = Recorder::default();
            let vb = VarBuilder::from_backend(Box::new(&recorder), DType::F32, Device::Cpu);
            build(vb.pp("layer")).unwrap();
            drop(vb);
            recorder.0.into_inner().unwrap()
        };
        let ours = requests(&|vb| linear(16, 8, vb).map(drop));
        assert_eq!(ours.len(), 2);
        assert_eq!(ours[0].0, "layer.weight");
        assert_eq!(ours[0].1, [8, 16]);
        assert_eq!(ours[1].0, "layer.bias");
        assert_eq!(ours[1].1, [8]);
        assert_eq!(ours, requests(&|vb| candle_nn::linear(16, 8, vb).map(drop)));
        let ours = requests(&|vb| linear_no_bias(16, 8, vb).map(drop));
        assert_eq!(ours.len(), 1);
        assert_eq!(
            ours,
            requests(&|vb| candle_nn::linear_no_bias(16, 8, vb).map(drop))
        );
        Ok(())
    }
}

//! Multi-head scaled-dot-product attention over flattened voxels, in query chunks.

use crate::error::NnError;
use candle_core::{DType, Result, Tensor, D};

/// Settings of [`attention`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionConfig {
    /// Number of heads; the channel axes of q, k and v are split evenly among them.
    pub num_heads: usize,
    /// Factor applied to `q·kᵀ` before the softmax (usually `1/√head_dim`).
    pub scale: f64,
    /// Compute scores and softmax in f32 for half-precision inputs (MONAI's `upcast_attention`).
    pub upcast: bool,
    /// Most score elements (`batch·heads·chunk·keys`) held at once; queries are processed in
    /// chunks that fit, so memory stays bounded for large volumes.
    pub max_scores: usize,
}

impl AttentionConfig {
    /// `num_heads` heads of `head_dim` channels, scale `1/√head_dim`, no upcast, and a
    /// 64 Mi-element score budget (256 MB in f32).
    pub fn new(num_heads: usize, head_dim: usize) -> Self {
        Self {
            num_heads,
            scale: 1.0 / (head_dim as f64).sqrt(),
            upcast: false,
            max_scores: 1 << 26,
        }
    }
}

/// `softmax(scale · q·kᵀ) · v` per head, queries processed in chunks.
///
/// # Shapes
/// `q`: `[b, n_q, heads·d_k]`, `k`: `[b, n_k, heads·d_k]`, `v`: `[b, n_k, heads·d_v]` →
/// `[b, n_q, heads·d_v]`.
///
/// # Errors
/// [`NnError`] when ranks, batch sizes, token counts or head splits disagree.
///
/// ```
/// use brain_ldm_nn::{attention, AttentionConfig};
/// use candle_core::{Device, Tensor};
/// let q = Tensor::zeros((1, 3, 4), candle_core::DType::F32, &Device::Cpu)?;
/// let kv = Tensor::arange(0f32, 8., &Device::Cpu)?.reshape((1, 2, 4))?;
/// // Equal scores: every query gets the mean of the values.
/// let y = attention(&q, &kv, &kv, &AttentionConfig::new(2, 2))?;
/// assert_eq!(y.to_vec3::<f32>()?[0][0], [2.0, 3.0, 4.0, 5.0]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, cfg: &AttentionConfig) -> Result<Tensor> {
    const OP: &str = "attention";
    let (b, nq, cq) = q.dims3()?;
    let (bk, nk, ck) = k.dims3()?;
    let (bv, nv, cv) = v.dims3()?;
    let h = cfg.num_heads;
    if bk != b || bv != b || nv != nk || ck != cq || h == 0 || cq % h != 0 || cv % h != 0 {
        return Err(NnError::Geometry {
            op: OP,
            reason: format!(
                "q {:?}, k {:?}, v {:?} do not fit {h} heads",
                q.dims(),
                k.dims(),
                v.dims()
            ),
        }
        .into());
    }
    let (dk, dv) = (cq / h, cv / h);
    let heads = |t: &Tensor, n: usize, d: usize| -> Result<Tensor> {
        t.reshape((b, n, h, d))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * h, n, d))
    };
    let score_dtype = if cfg.upcast { DType::F32 } else { q.dtype() };
    // The scale applied to the queries (n_q·d_k products) rather than to the scores
    // (n_q·n_k products, a full pass over them).
    let qh = (heads(q, nq, dk)?.to_dtype(score_dtype)? * cfg.scale)?;
    let kt = heads(k, nk, dk)?
        .to_dtype(score_dtype)?
        .transpose(1, 2)?
        .contiguous()?;
    let vh = heads(v, nk, dv)?;
    let tracked = q.track_op() || k.track_op() || v.track_op();
    let chunk = (cfg.max_scores / (b * h * nk).max(1)).clamp(1, nq);
    let mut outs = Vec::with_capacity(nq.div_ceil(chunk));
    let mut start = 0;
    while start < nq {
        let len = chunk.min(nq - start);
        let scores = qh.narrow(1, start, len)?.matmul(&kt)?;
        let probs = if tracked {
            candle_nn::ops::softmax(&scores, D::Minus1)?
        } else {
            candle_nn::ops::softmax_last_dim(&scores)?
        };
        outs.push(probs.to_dtype(vh.dtype())?.matmul(&vh)?);
        start += len;
    }
    let out = Tensor::cat(&outs, 1)?;
    out.reshape((b, h, nq, dv))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, nq, h * dv))
}

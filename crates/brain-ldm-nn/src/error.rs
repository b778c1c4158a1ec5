//! The error type of brain-ldm-nn.

/// Why a brain-ldm-nn layer rejected its input.
///
/// Layers implement candle's [`Module`](candle_core::Module), so these errors reach callers
/// wrapped in [`candle_core::Error::Wrapped`]; their message names the operation and the shapes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NnError {
    /// The tensor does not have the rank the operation needs.
    #[error("{op}: expected a rank-{expected} tensor, got shape {got:?}")]
    Rank {
        /// The operation that failed.
        op: &'static str,
        /// The rank it needs.
        expected: usize,
        /// The shape it was given.
        got: Vec<usize>,
    },
    /// The input's channel count does not match the layer's weights.
    #[error("{op}: input has {got} channels, the weights expect {expected}")]
    Channels {
        /// The operation that failed.
        op: &'static str,
        /// Channels the weights expect.
        expected: usize,
        /// Channels of the input.
        got: usize,
    },
    /// A dimension of an input is zero.
    #[error("{op}: zero-sized dimension in shape {shape:?}")]
    EmptyDim {
        /// The operation that failed.
        op: &'static str,
        /// The offending shape.
        shape: Vec<usize>,
    },
    /// The (padded) input is smaller than the kernel, or another geometric constraint fails.
    #[error("{op}: {reason}")]
    Geometry {
        /// The operation that failed.
        op: &'static str,
        /// What is wrong, with the sizes involved.
        reason: String,
    },
    /// Two shapes that must agree do not.
    #[error("{op}: shape mismatch, {what}: expected {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// The operation that failed.
        op: &'static str,
        /// Which tensor is mismatched.
        what: &'static str,
        /// The shape required.
        expected: Vec<usize>,
        /// The shape given.
        got: Vec<usize>,
    },
}

impl From<NnError> for candle_core::Error {
    fn from(e: NnError) -> Self {
        candle_core::Error::wrap(e)
    }
}

/// Checks that `dims` has `rank` entries, none of them zero.
pub(crate) fn check_rank(op: &'static str, dims: &[usize], rank: usize) -> Result<(), NnError> {
    if dims.len() != rank {
        return Err(NnError::Rank {
            op,
            expected: rank,
            got: dims.to_vec(),
        });
    }
    if dims.contains(&0) {
        return Err(NnError::EmptyDim {
            op,
            shape: dims.to_vec(),
        });
    }
    Ok(())
}

//! CPU storage access shared by the custom operations.

use candle_core::{CpuStorage, Layout, Result};

use crate::NnError;

/// The contiguous f32 data of a CPU storage, or an error naming `op` (a wrong dtype gives
/// candle's own error).
pub(crate) fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &'static str,
) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| NnError::Geometry {
            op,
            reason: "input is not contiguous".to_string(),
        })?;
    Ok(&data[start..end])
}

//! Conversion between the file's element order and the in-memory array order.
//!
//! NIfTI stores voxels column-major: `i` (the first axis) varies fastest, then `j`, then `k`
//! (byte offset of voxel `(i, j, k)` = `((k·nj + j)·ni + i) · bytes`). In memory a
//! [`Volume`](crate::Volume) holds a row-major (C-order) array indexed `[i, j, k]`, so `k` is
//! contiguous. Decoding therefore transposes; it works on blocks of `i` so that both sides
//! stay in cache, and runs the blocks on rayon's pool.

use rayon::prelude::*;

use crate::datatype::{ByteOrder, DataType};

/// Decodes one volume in file order to a row-major `[ni, nj, nk]` array of f32, applying
/// `value · slope + inter` (in f64) when `scaling` is given.
///
/// `bytes` must hold exactly `ni·nj·nk` elements of `dtype`.
pub(crate) fn decode_volume(
    bytes: &[u8],
    dtype: DataType,
    order: ByteOrder,
    shape: [usize; 3],
    scaling: Option<(f64, f64)>,
) -> Vec<f32> {
    macro_rules! run {
        ($t:expr) => {
            match scaling {
                None => transpose_decode(bytes, shape, |b, n| $t.decode(b, n, order) as f32),
                Some((slope, inter)) => transpose_decode(bytes, shape, |b, n| {
                    ($t.decode(b, n, order) * slope + inter) as f32
                }),
            }
        };
    }
    match dtype {
        DataType::U8 => run!(DataType::U8),
        DataType::I8 => run!(DataType::I8),
        DataType::I16 => run!(DataType::I16),
        DataType::U16 => run!(DataType::U16),
        DataType::I32 => run!(DataType::I32),
        DataType::U32 => run!(DataType::U32),
        DataType::I64 => run!(DataType::I64),
        DataType::U64 => run!(DataType::U64),
        DataType::F32 => run!(DataType::F32),
        DataType::F64 => run!(DataType::F64),
    }
}

/// Block of `i` values handled together: each destination row then stays in cache while
/// the source is read along contiguous runs of `i`.
const I_BLOCK: usize = 32;

fn transpose_decode<F>(bytes: &[u8], [ni, nj, nk]: [usize; 3], decode: F) -> Vec<f32>
where
    F: Fn(&[u8], usize) -> f32 + Sync,
{
    let plane = nj * nk;
    let mut out = vec![0f32; ni * plane];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(I_BLOCK * plane)
        .enumerate()
        .for_each(|(block, chunk)| {
            let i0 = block * I_BLOCK;
            let bi = chunk.len() / plane;
            for j in 0..nj {
                for k in 0..nk {
                    let src = (k * nj + j) * ni + i0;
                    let dst = j * nk + k;
                    for di in 0..bi {
                        chunk[di * plane + dst] = decode(bytes, src + di);
                    }
                }
            }
        });
    out
}

/// Encodes a row-major `[ni, nj, nk]` array in file order (`i` fastest), each value first
/// mapped by `to_stored` (scaling, rounding and clamping for integer types).
pub(crate) fn encode_volume<F>(
    data: &[f32],
    [ni, nj, nk]: [usize; 3],
    dtype: DataType,
    order: ByteOrder,
    to_stored: F,
) -> Vec<u8>
where
    F: Fn(f32) -> f64 + Sync,
{
    let slabs: Vec<Vec<u8>> = (0..nk)
        .into_par_iter()
        .map(|k| {
            let mut slab = Vec::with_capacity(ni * nj * dtype.size());
            for j in 0..nj {
                for i in 0..ni {
                    dtype.encode(to_stored(data[(i * nj + j) * nk + k]), &mut slab, order);
                }
            }
            slab
        })
        .collect();
    slabs.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_order_is_i_fastest_and_round_trips() {
        let shape = [3usize, 4, 5];
        // File bytes: element n holds n, so voxel (i, j, k) holds (k·4 + j)·3 + i.
        let bytes: Vec<u8> = (0..60u8).collect();
        let data = decode_volume(&bytes, DataType::U8, ByteOrder::Little, shape, None);
        for i in 0..3 {
            for j in 0..4 {
                for k in 0..5 {
                    assert_eq!(data[(i * 4 + j) * 5 + k], ((k * 4 + j) * 3 + i) as f32);
                }
            }
        }
        let back = encode_volume(&data, shape, DataType::U8, ByteOrder::Little, |v| v as f64);
        assert_eq!(back, bytes);
    }

    #[test]
    fn more_than_one_i_block() {
        let shape = [70usize, 2, 3];
        let n = 70 * 6;
        let mut bytes = Vec::new();
        for v in 0..n {
            DataType::I16.encode(v as f64, &mut bytes, ByteOrder::Big);
        }
        let data = decode_volume(
            &bytes,
            DataType::I16,
            ByteOrder::Big,
            shape,
            Some((2.0, 1.0)),
        );
        assert_eq!(
            data[(69 * 2 + 1) * 3 + 2],
            ((2 * 2 + 1) * 70 + 69) as f32 * 2.0 + 1.0
        );
    }
}

//! Internal view of a 2D or 3D f32 image as a contiguous row-major `[d, h, w]` block.
//!
//! A 2D image `[h, w]` is stored as `[1, h, w]` with `rank == 2`, so one filtering and
//! pooling code path serves both; the first axis is then never filtered or pooled.

use std::borrow::Cow;

use ndarray::{ArrayBase, Data, Dimension};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// A contiguous 2D/3D f32 image (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Grid<'a> {
    /// Row-major voxels, `dims[0]·dims[1]·dims[2]` of them.
    pub(crate) data: Cow<'a, [f32]>,
    /// `[d, h, w]`; `d == 1` for 2D images.
    pub(crate) dims: [usize; 3],
    /// 2 or 3: the number of spatial axes of the caller's array.
    pub(crate) rank: usize,
}

impl<'a> Grid<'a> {
    /// Views a 2D or 3D array, copying only when it is not in standard layout.
    ///
    /// # Errors
    /// [`Error::BadRank`] unless the array is 2D or 3D.
    pub(crate) fn new<S, D>(arr: &'a ArrayBase<S, D>, what: &str) -> Result<Grid<'a>>
    where
        S: Data<Elem = f32>,
        D: Dimension,
    {
        let shape = arr.shape();
        let (dims, rank) = match *shape {
            [h, w] => ([1, h, w], 2),
            [d, h, w] => ([d, h, w], 3),
            _ => {
                return Err(Error::BadRank {
                    what: what.to_string(),
                    expected: "2D [H, W] or 3D [D, H, W]",
                    got: shape.to_vec(),
                })
            }
        };
        Ok(Grid {
            data: contiguous(arr),
            dims,
            rank,
        })
    }

    /// The caller's shape (`[h, w]` or `[d, h, w]`).
    pub(crate) fn shape(&self) -> Vec<usize> {
        self.dims[3 - self.rank..].to_vec()
    }

    /// The spatial sizes, `rank` of them.
    pub(crate) fn spatial(&self) -> &[usize] {
        &self.dims[3 - self.rank..]
    }

    /// Fails on the first NaN or infinity.
    ///
    /// # Errors
    /// [`Error::NonFinite`] naming `what` and the flat index.
    pub(crate) fn check_finite(&self, what: &str) -> Result<()> {
        check_finite(&self.data, what)
    }

    /// 2× average pooling of every spatial axis, dropping a trailing odd voxel (as
    /// PyTorch's `avg_poolNd(kernel_size=2)`).
    pub(crate) fn avg_pool2(&self) -> Grid<'static> {
        let [d, h, w] = self.dims;
        let (od, fd) = if self.rank == 3 { (d / 2, 2) } else { (1, 1) };
        let (oh, ow) = (h / 2, w / 2);
        let scale = 1.0 / (fd * 4) as f32;
        let src = &self.data;
        let mut out = vec![0.0f32; od * oh * ow];
        if !out.is_empty() {
            out.par_chunks_mut(oh * ow)
                .enumerate()
                .for_each(|(z, plane)| {
                    for (y, row) in plane.chunks_exact_mut(ow).enumerate() {
                        for (x, o) in row.iter_mut().enumerate() {
                            let mut s = 0.0f32;
                            for dz in 0..fd {
                                for dy in 0..2 {
                                    let base = ((z * fd + dz) * h + 2 * y + dy) * w + 2 * x;
                                    s += src[base] + src[base + 1];
                                }
                            }
                            *o = s * scale;
                        }
                    }
                });
        }
        Grid {
            data: Cow::Owned(out),
            dims: [od, oh, ow],
            rank: self.rank,
        }
    }
}

/// The array's elements in row-major order, borrowed when it is already in standard
/// layout.
pub(crate) fn contiguous<S, D>(arr: &ArrayBase<S, D>) -> Cow<'_, [f32]>
where
    S: Data<Elem = f32>,
    D: Dimension,
{
    match arr.view().to_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(arr.iter().copied().collect()),
    }
}

/// Fails on the first NaN or infinity in `data`.
///
/// # Errors
/// [`Error::NonFinite`] naming `what` and the flat index.
pub(crate) fn check_finite(data: &[f32], what: &str) -> Result<()> {
    match data.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(Error::NonFinite {
            what: what.to_string(),
            index,
            value: data[index],
        }),
    }
}

/// Fails unless `a` and `b` have the same shape.
///
/// # Errors
/// [`Error::ShapeMismatch`].
pub(crate) fn check_same_shape(a: &Grid<'_>, b: &Grid<'_>) -> Result<()> {
    if a.rank != b.rank || a.dims != b.dims {
        return Err(Error::ShapeMismatch {
            what: "y_pred vs y".to_string(),
            expected: a.shape(),
            got: b.shape(),
        });
    }
    Ok(())
}

//! Small array operations on x-fastest 3D buffers: separable filtering, 2× box
//! downsampling, trilinear sampling and 6-connected components.

use rayon::prelude::*;

use crate::grid::flat;

/// A normalised Gaussian kernel of standard deviation `sigma` voxels, radius 3σ.
pub(crate) fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let r = (3.0 * sigma).ceil().max(1.0) as i32;
    let mut k: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    k
}

/// Convolves `data` (shape `dims`, x fastest) with the odd 1D `kernel` along every axis,
/// treating voxels outside the grid as zero.
pub(crate) fn separable_filter(data: &mut [f32], dims: [usize; 3], kernel: &[f32]) {
    let r = (kernel.len() / 2) as isize;
    let (nx, ny, nz) = (dims[0], dims[1], dims[2]);
    let plane = nx * ny;
    // x and y: within each z-slice.
    data.par_chunks_mut(plane).for_each(|slice| {
        let mut line = vec![0f32; nx.max(ny)];
        for j in 0..ny {
            let row = &mut slice[j * nx..(j + 1) * nx];
            line[..nx].copy_from_slice(row);
            for (i, out) in row.iter_mut().enumerate() {
                *out = conv_at(&line[..nx], i as isize, kernel, r);
            }
        }
        for i in 0..nx {
            for j in 0..ny {
                line[j] = slice[j * nx + i];
            }
            for j in 0..ny {
                slice[j * nx + i] = conv_at(&line[..ny], j as isize, kernel, r);
            }
        }
    });
    // z: over columns, in parallel over y.
    let src = data.to_vec();
    let rows: Vec<(usize, Vec<f32>)> = (0..ny)
        .into_par_iter()
        .map(|j| {
            let mut out = vec![0f32; nx * nz];
            let mut line = vec![0f32; nz];
            for i in 0..nx {
                for (k, l) in line.iter_mut().enumerate() {
                    *l = src[flat(dims, i, j, k)];
                }
                for k in 0..nz {
                    out[k * nx + i] = conv_at(&line, k as isize, kernel, r);
                }
            }
            (j, out)
        })
        .collect();
    for (j, out) in rows {
        for k in 0..nz {
            let dst = flat(dims, 0, j, k);
            data[dst..dst + nx].copy_from_slice(&out[k * nx..(k + 1) * nx]);
        }
    }
}

#[inline]
fn conv_at(line: &[f32], i: isize, kernel: &[f32], r: isize) -> f32 {
    let n = line.len() as isize;
    let mut acc = 0f32;
    for (t, &w) in kernel.iter().enumerate() {
        let p = i + t as isize - r;
        if p >= 0 && p < n {
            acc += w * line[p as usize];
        }
    }
    acc
}

/// The shape of a 2× downsampled grid (partial boxes at the far edges kept).
pub(crate) fn half_dims(dims: [usize; 3]) -> [usize; 3] {
    [
        dims[0].div_ceil(2),
        dims[1].div_ceil(2),
        dims[2].div_ceil(2),
    ]
}

/// 2× box average of a `C`-channel grid; voxels outside the source count as zero.
pub(crate) fn box_down<T: Copy + Into<f32> + Sync, const C: usize>(
    src: &[[T; C]],
    dims: [usize; 3],
) -> Vec<[f32; C]> {
    let hd = half_dims(dims);
    let mut out = vec![[0f32; C]; hd[0] * hd[1] * hd[2]];
    out.par_chunks_mut(hd[0] * hd[1])
        .enumerate()
        .for_each(|(k, slice)| {
            for j in 0..hd[1] {
                for i in 0..hd[0] {
                    let mut acc = [0f32; C];
                    for dz in 0..2 {
                        for dy in 0..2 {
                            for dx in 0..2 {
                                let (x, y, z) = (2 * i + dx, 2 * j + dy, 2 * k + dz);
                                if x < dims[0] && y < dims[1] && z < dims[2] {
                                    let v = &src[flat(dims, x, y, z)];
                                    for c in 0..C {
                                        acc[c] += v[c].into();
                                    }
                                }
                            }
                        }
                    }
                    for a in acc.iter_mut() {
                        *a *= 0.125;
                    }
                    slice[i + hd[0] * j] = acc;
                }
            }
        });
    out
}

/// Trilinear interpolation of a `C`-channel grid at continuous voxel coordinates `q`
/// (voxel centres at integers); outside the grid the values are zero.
#[inline]
pub(crate) fn trilinear<T: Copy + Into<f32>, const C: usize>(
    data: &[[T; C]],
    dims: [usize; 3],
    q: [f32; 3],
) -> [f32; C] {
    let mut out = [0f32; C];
    let f = [q[0].floor(), q[1].floor(), q[2].floor()];
    let (x0, y0, z0) = (f[0] as isize, f[1] as isize, f[2] as isize);
    if x0 < -1
        || y0 < -1
        || z0 < -1
        || x0 >= dims[0] as isize
        || y0 >= dims[1] as isize
        || z0 >= dims[2] as isize
    {
        return out;
    }
    let t = [q[0] - f[0], q[1] - f[1], q[2] - f[2]];
    for dz in 0..2 {
        let z = z0 + dz;
        if z < 0 || z >= dims[2] as isize {
            continue;
        }
        let wz = if dz == 0 { 1.0 - t[2] } else { t[2] };
        for dy in 0..2 {
            let y = y0 + dy;
            if y < 0 || y >= dims[1] as isize {
                continue;
            }
            let wy = wz * if dy == 0 { 1.0 - t[1] } else { t[1] };
            for dx in 0..2 {
                let x = x0 + dx;
                if x < 0 || x >= dims[0] as isize {
                    continue;
                }
                let w = wy * if dx == 0 { 1.0 - t[0] } else { t[0] };
                let v = &data[flat(dims, x as usize, y as usize, z as usize)];
                for c in 0..C {
                    out[c] += w * v[c].into();
                }
            }
        }
    }
    out
}

/// Labels the 6-connected components of `mask` (shape `dims`): returns one label per
/// voxel (0 outside the mask, components numbered from 1 in scan order) and the voxel
/// count of each component (index 0 unused).
pub(crate) fn components(mask: &[bool], dims: [usize; 3]) -> (Vec<u32>, Vec<usize>) {
    let mut label = vec![0u32; mask.len()];
    let mut sizes = vec![0usize];
    let mut stack = Vec::new();
    let plane = dims[0] * dims[1];
    for start in 0..mask.len() {
        if !mask[start] || label[start] != 0 {
            continue;
        }
        let id = sizes.len() as u32;
        let mut size = 0usize;
        label[start] = id;
        stack.push(start);
        while let Some(p) = stack.pop() {
            size += 1;
            let i = p % dims[0];
            let j = (p / dims[0]) % dims[1];
            let k = p / plane;
            let mut visit = |q: usize| {
                if mask[q] && label[q] == 0 {
                    label[q] = id;
                    stack.push(q);
                }
            };
            if i > 0 {
                visit(p - 1);
            }
            if i + 1 < dims[0] {
                visit(p + 1);
            }
            if j > 0 {
                visit(p - dims[0]);
            }
            if j + 1 < dims[1] {
                visit(p + dims[0]);
            }
            if k > 0 {
                visit(p - plane);
            }
            if k + 1 < dims[2] {
                visit(p + plane);
            }
        }
        sizes.push(size);
    }
    (label, sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_keeps_a_constant_interior() {
        let dims = [9, 9, 9];
        let mut d = vec![1f32; 729];
        separable_filter(&mut d, dims, &[0.25, 0.5, 0.25]);
        assert!((d[flat(dims, 4, 4, 4)] - 1.0).abs() < 1e-6);
        assert!((d[flat(dims, 0, 4, 4)] - 0.75).abs() < 1e-6);
    }

    #[test]
    fn trilinear_interpolates_and_zero_pads() {
        let dims = [2, 1, 1];
        let d = [[0f32], [2.0]];
        assert_eq!(trilinear(&d, dims, [0.5, 0.0, 0.0])[0], 1.0);
        assert_eq!(trilinear(&d, dims, [1.5, 0.0, 0.0])[0], 1.0);
        assert_eq!(trilinear(&d, dims, [5.0, 0.0, 0.0])[0], 0.0);
    }

    #[test]
    fn components_are_six_connected() {
        let dims = [3, 3, 1];
        // Two voxels touching only diagonally are two components.
        let mask = [true, false, false, false, true, false, false, false, false];
        let (lab, sizes) = components(&mask, dims);
        assert_eq!(sizes, vec![0, 1, 1]);
        assert_ne!(lab[0], lab[4]);
    }
}

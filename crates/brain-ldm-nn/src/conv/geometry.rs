//! Shapes of a 3D convolution: configuration and validated geometry.

use crate::error::{check_rank, NnError};

/// Stride and zero padding of a 3D convolution.
///
/// Padding is given per spatial axis (depth, height, width) as `(before, after)`, so both
/// PyTorch's symmetric padding and MONAI's autoencoder downsampling (one zero after each axis,
/// then stride 2) are expressible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv3dConfig {
    /// Stride per spatial axis (depth, height, width).
    pub stride: [usize; 3],
    /// Zero padding `(before, after)` per spatial axis.
    pub padding: [(usize, usize); 3],
}

impl Default for Conv3dConfig {
    fn default() -> Self {
        Self {
            stride: [1; 3],
            padding: [(0, 0); 3],
        }
    }
}

impl Conv3dConfig {
    /// The same `padding` on both sides of every axis and the same `stride` along every axis,
    /// as `torch.nn.Conv3d(padding=p, stride=s)`.
    pub fn new(padding: usize, stride: usize) -> Self {
        Self {
            stride: [stride; 3],
            padding: [(padding, padding); 3],
        }
    }

    /// MONAI's autoencoder downsampling: pad one zero after each spatial axis, stride 2.
    pub fn pad_after_stride2() -> Self {
        Self {
            stride: [2; 3],
            padding: [(0, 1); 3],
        }
    }
}

/// A validated convolution: input `[batch, c_in, input…]`, weight `[c_out, c_in, kernel…]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvGeometry {
    pub batch: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub input: [usize; 3],
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub padding: [(usize, usize); 3],
    pub output: [usize; 3],
}

impl ConvGeometry {
    /// Checks ranks, channels and sizes, and computes the output size.
    pub fn new(x: &[usize], w: &[usize], cfg: &Conv3dConfig) -> Result<Self, NnError> {
        const OP: &str = "conv3d";
        check_rank(OP, x, 5)?;
        check_rank(OP, w, 5)?;
        if x[1] != w[1] {
            return Err(NnError::Channels {
                op: OP,
                expected: w[1],
                got: x[1],
            });
        }
        if cfg.stride.contains(&0) {
            return Err(NnError::Geometry {
                op: OP,
                reason: format!("stride {:?} has a zero entry", cfg.stride),
            });
        }
        let mut output = [0; 3];
        for a in 0..3 {
            let (before, after) = cfg.padding[a];
            let padded = x[2 + a] + before + after;
            if padded < w[2 + a] {
                return Err(NnError::Geometry {
                    op: OP,
                    reason: format!(
                        "padded input {:?} (padding {:?}) is smaller than the kernel {:?}",
                        &x[2..],
                        cfg.padding,
                        &w[2..]
                    ),
                });
            }
            output[a] = (padded - w[2 + a]) / cfg.stride[a] + 1;
        }
        Ok(Self {
            batch: x[0],
            c_in: x[1],
            c_out: w[0],
            input: [x[2], x[3], x[4]],
            kernel: [w[2], w[3], w[4]],
            stride: cfg.stride,
            padding: cfg.padding,
            output,
        })
    }

    /// Number of kernel taps, `kd·kh·kw`.
    pub fn taps(&self) -> usize {
        self.kernel.iter().product()
    }

    /// Number of input voxels per channel.
    pub fn input_volume(&self) -> usize {
        self.input.iter().product()
    }

    /// Positions a stride-1 convolution computes on the zero-padded ("virtual") grid, where
    /// every kernel tap is a constant flat offset: from the first output voxel to the last,
    /// padding columns included.
    pub fn virtual_grid_positions(&self) -> usize {
        let [(_, _), (phb, pha), (pwb, pwa)] = self.padding;
        let hp = self.input[1] + phb + pha;
        let wp = self.input[2] + pwb + pwa;
        let [od, oh, ow] = self.output;
        (od - 1) * hp * wp + (oh - 1) * wp + ow
    }

    /// Number of output voxels per channel.
    pub fn output_volume(&self) -> usize {
        self.output.iter().product()
    }
}

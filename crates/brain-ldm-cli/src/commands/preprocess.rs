//! `brain-ldm preprocess IN OUT`: reorient, resample, crop/pad and scale to the model's input.

use std::path::PathBuf;
use std::time::Instant;

use brain_ldm_nifti::preprocess::{IntensityScaling, Interpolation, PreprocessOptions};
use brain_ldm_nifti::{AxisCodes, DataType, ReadOptions, WriteOptions};
use clap::{Args, ValueEnum};

/// Bring a NIfTI volume into the brain LDM's input space and write it.
///
/// Steps, in order:
/// reorient, resample (voxel centres kept inside the field of view, centred), crop or pad
/// (centred, zero fill), scale intensities. The defaults give the model's input: RAS, 1 mm,
/// 160×224×160, min-max scaled to [0, 1].
#[derive(Debug, Args)]
pub struct PreprocessArgs {
    /// Input NIfTI file (.nii, .nii.gz, .hdr/.img).
    pub input: PathBuf,
    /// Output file (.nii or .nii.gz); written to a temporary file and renamed.
    pub output: PathBuf,
    /// Target voxel size in mm: one value for all axes or three comma-separated.
    #[arg(long, default_value = "1", value_parser = parse_spacing)]
    pub spacing: [f64; 3],
    /// Target shape after resampling: three comma-separated extents (i, j, k).
    #[arg(long, default_value = "160,224,160", value_parser = parse_shape)]
    pub shape: [usize; 3],
    /// Target orientation: three letters, one each of L/R, P/A, I/S.
    #[arg(long, default_value = "RAS", value_parser = parse_orientation)]
    pub orientation: AxisCodes,
    /// Intensity scaling to [0, 1].
    #[arg(long, value_enum, default_value_t = Scale::Minmax)]
    pub scale: Scale,
    /// Percentiles clipped to before scaling with `--scale percentile`: LOW,HIGH (0–100).
    #[arg(long, default_value = "0.5,99.5", value_parser = parse_percentiles)]
    pub percentiles: (f64, f64),
    /// Interpolation: linear for images, nearest for label maps.
    #[arg(long, value_enum, default_value_t = Interp::Linear)]
    pub interpolation: Interp,
    /// Stored datatype of the output (integer types are scaled to span their range).
    #[arg(long, value_enum, default_value_t = OutType::Float32)]
    pub datatype: OutType,
    /// Volume of a 4D input to use (0-based); required when the input has several.
    #[arg(long)]
    pub volume: Option<usize>,
}

/// `--scale` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scale {
    /// Min-max to [0, 1].
    Minmax,
    /// Clip to `--percentiles`, then min-max to [0, 1].
    Percentile,
    /// Keep intensities.
    None,
}

/// `--interpolation` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Interp {
    /// Trilinear.
    Linear,
    /// Nearest neighbour.
    Nearest,
}

/// `--datatype` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutType {
    /// 32-bit float (exact).
    Float32,
    /// 8-bit unsigned with scl_slope/scl_inter.
    Uint8,
    /// 16-bit signed with scl_slope/scl_inter.
    Int16,
}

/// Runs `preprocess`.
pub fn run(args: PreprocessArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut read = ReadOptions::new();
    if let Some(v) = args.volume {
        read = read.volume(v);
    }
    let vol = read.read(&args.input)?;
    let options = PreprocessOptions {
        orientation: Some(args.orientation),
        spacing: Some(args.spacing),
        interpolation: match args.interpolation {
            Interp::Linear => Interpolation::Linear,
            Interp::Nearest => Interpolation::Nearest,
        },
        shape: Some(args.shape),
        scaling: match args.scale {
            Scale::Minmax => Some(IntensityScaling::MinMax),
            Scale::Percentile => Some(IntensityScaling::Percentile {
                lower: args.percentiles.0,
                upper: args.percentiles.1,
            }),
            Scale::None => None,
        },
    };
    let out = options.apply(&vol)?;
    let datatype = match args.datatype {
        OutType::Float32 => DataType::F32,
        OutType::Uint8 => DataType::U8,
        OutType::Int16 => DataType::I16,
    };
    WriteOptions::new()
        .datatype(datatype)
        .write(&out, &args.output)?;
    let s = out.stats();
    println!(
        "{} -> {}: shape {:?}, voxel sizes {:?}, {}, min/max/mean {} / {} / {:.6}, {:.0} ms",
        args.input.display(),
        args.output.display(),
        out.shape(),
        out.voxel_sizes(),
        out.orientation()?,
        s.min,
        s.max,
        s.mean,
        start.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

fn parse_spacing(s: &str) -> Result<[f64; 3], String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>().map_err(|e| format!("{x:?}: {e}")))
        .collect::<Result<_, _>>()?;
    let v = match v.as_slice() {
        [x] => [*x; 3],
        [a, b, c] => [*a, *b, *c],
        _ => return Err(format!("{s:?}: give one value or three comma-separated")),
    };
    if v.iter().any(|x| !x.is_finite() || *x <= 0.0) {
        return Err(format!("{s:?}: voxel sizes must be positive"));
    }
    Ok(v)
}

fn parse_shape(s: &str) -> Result<[usize; 3], String> {
    let v: Vec<usize> = s
        .split(',')
        .map(|x| x.trim().parse::<usize>().map_err(|e| format!("{x:?}: {e}")))
        .collect::<Result<_, _>>()?;
    match v.as_slice() {
        [a, b, c] if *a > 0 && *b > 0 && *c > 0 => Ok([*a, *b, *c]),
        _ => Err(format!(
            "{s:?}: give three positive comma-separated extents"
        )),
    }
}

fn parse_orientation(s: &str) -> Result<AxisCodes, String> {
    s.parse::<AxisCodes>().map_err(|e| e.to_string())
}

fn parse_percentiles(s: &str) -> Result<(f64, f64), String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>().map_err(|e| format!("{x:?}: {e}")))
        .collect::<Result<_, _>>()?;
    match v.as_slice() {
        [lo, hi] if 0.0 <= *lo && lo < hi && *hi <= 100.0 => Ok((*lo, *hi)),
        _ => Err(format!("{s:?}: give LOW,HIGH with 0 <= LOW < HIGH <= 100")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_parsers() {
        assert_eq!(parse_spacing("1").unwrap(), [1.0; 3]);
        assert_eq!(parse_spacing("1,2,3.5").unwrap(), [1.0, 2.0, 3.5]);
        assert!(parse_spacing("1,2").is_err());
        assert!(parse_spacing("0").is_err());
        assert_eq!(parse_shape("160,224,160").unwrap(), [160, 224, 160]);
        assert!(parse_shape("160,0,160").is_err());
        assert_eq!(parse_orientation("lpi").unwrap().to_string(), "LPI");
        assert!(parse_orientation("LRS").is_err());
        assert_eq!(parse_percentiles("0.5,99.5").unwrap(), (0.5, 99.5));
        assert!(parse_percentiles("50,10").is_err());
    }
}

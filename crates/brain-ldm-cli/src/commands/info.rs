//! `brain-ldm info FILE [--json]`: what a NIfTI file holds, as nibabel would report it.

use std::path::PathBuf;

use anyhow::Context;
use brain_ldm_nifti::{header_affine, read_header, Affine, ReadOptions};
use clap::Args;
use serde::Serialize;

/// Print shape, voxel sizes, datatype, affine, orientation and intensity range of a NIfTI file.
///
/// Reads .nii, .nii.gz and .hdr/.img (NIfTI-1 or -2, either byte order). Values are as
/// nibabel reports them: the affine is `img.affine`, orientation `aff2axcodes`, and
/// min/max/mean are of the scaled data (`get_fdata()`).
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The NIfTI file.
    pub file: PathBuf,
    /// Print one JSON object (fields documented in docs/cli.md) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Volume of a 4D file whose statistics are printed (0-based).
    #[arg(long, default_value_t = 0)]
    pub volume: usize,
}

/// The `--json` output. A stable interface: fields are only ever added (then
/// `format_version` stays 1); removing or changing one bumps `format_version`.
#[derive(Debug, Serialize)]
pub struct InfoJson {
    /// Version of this JSON layout (1).
    pub format_version: u32,
    /// The file as given on the command line.
    pub file: String,
    /// 1 or 2.
    pub nifti_version: u8,
    /// "little" or "big".
    pub byte_order: &'static str,
    /// `dim[1..=dim[0]]` (nibabel's `img.shape`).
    pub shape: Vec<i64>,
    /// numpy name of the stored datatype (nibabel's `get_data_dtype()`).
    pub datatype: String,
    /// `pixdim[1..=3]` in the file's units (nibabel's `header.get_zooms()[:3]`).
    pub voxel_sizes: [f64; 3],
    /// Voxel-to-world affine, row-major (nibabel's `img.affine`).
    pub affine: Affine,
    /// "sform", "qform" or "pixdim": where the affine came from.
    pub affine_source: &'static str,
    /// `sform_code`.
    pub sform_code: i32,
    /// `qform_code`.
    pub qform_code: i32,
    /// Orientation codes of the voxel axes (nibabel's `aff2axcodes`), e.g. "RAS".
    pub orientation: String,
    /// `scl_slope`, or null when it is 0 or not finite (no scaling).
    pub scl_slope: Option<f64>,
    /// `scl_inter`, or null when there is no scaling.
    pub scl_inter: Option<f64>,
    /// Number of 3D volumes (1 for 3D files).
    pub volumes: usize,
    /// The volume the statistics are of.
    pub volume: usize,
    /// Minimum of the scaled data.
    pub min: f64,
    /// Maximum of the scaled data.
    pub max: f64,
    /// Mean of the scaled data (summed in f64).
    pub mean: f64,
}

/// Runs `info`.
pub fn run(args: InfoArgs) -> anyhow::Result<()> {
    let info = collect(&args)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&info).context("serialising info")?
        );
    } else {
        print_text(&info);
    }
    Ok(())
}

fn collect(args: &InfoArgs) -> anyhow::Result<InfoJson> {
    let header = read_header(&args.file)?;
    let vol = ReadOptions::new().volume(args.volume).read(&args.file)?;
    let (affine, source) = header_affine(&header);
    let ndim = header.ndim().clamp(0, 7) as usize;
    let shape = header.dim[1..=ndim].to_vec();
    let volumes = shape.get(3).copied().unwrap_or(1).max(1) as usize;
    let stats = vol.stats();
    let scaling = header.slope_inter();
    Ok(InfoJson {
        format_version: 1,
        file: args.file.display().to_string(),
        nifti_version: header.version.number(),
        byte_order: header.byte_order.name(),
        shape,
        datatype: header
            .data_type()
            .map(|t| t.name().to_string())
            .unwrap_or_default(),
        voxel_sizes: header.zooms(),
        affine,
        affine_source: source.name(),
        sform_code: header.sform_code,
        qform_code: header.qform_code,
        orientation: vol.orientation()?.to_string(),
        scl_slope: scaling.map(|s| s.0),
        scl_inter: scaling.map(|s| s.1),
        volumes,
        volume: args.volume,
        min: stats.min,
        max: stats.max,
        mean: stats.mean,
    })
}

fn print_text(info: &InfoJson) {
    println!("file:          {}", info.file);
    println!(
        "format:        NIfTI-{} ({}-endian)",
        info.nifti_version, info.byte_order
    );
    println!("shape:         {:?}", info.shape);
    println!("datatype:      {}", info.datatype);
    println!("voxel sizes:   {:?}", info.voxel_sizes);
    println!("orientation:   {}", info.orientation);
    println!(
        "affine:        from {} (sform_code {}, qform_code {})",
        info.affine_source, info.sform_code, info.qform_code
    );
    for row in &info.affine {
        println!(
            "               [{:>12.6} {:>12.6} {:>12.6} {:>12.6}]",
            row[0], row[1], row[2], row[3]
        );
    }
    match (info.scl_slope, info.scl_inter) {
        (Some(s), Some(i)) => println!("scaling:       value * {s} + {i}"),
        _ => println!("scaling:       none"),
    }
    if info.volumes > 1 {
        println!("volume:        {} of {}", info.volume, info.volumes);
    }
    println!(
        "min/max/mean:  {} / {} / {:.6}",
        info.min, info.max, info.mean
    );
}

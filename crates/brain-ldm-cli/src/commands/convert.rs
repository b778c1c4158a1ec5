//! `brain-ldm convert`: a MONAI bundle folder (or a brain-ldm model folder) → a brain-ldm
//! model folder, with f32, f16 or bf16 weights.

use candle_core::DType;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// Convert the public MONAI bundle (old-key .pt weights), or re-write a brain-ldm model folder,
/// into a brain-ldm model folder: safetensors weights under MONAI core key names and
/// model.json. The weights are checked against the models first. --dtype f16 (or bf16) stores
/// them at half the size; they are converted back to f32 when loaded. --guidance-scale records
/// the scale sampling uses by default.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The bundle folder (configs/, models/) or a brain-ldm model folder (model.json).
    #[arg(long, visible_alias = "model", value_name = "DIR")]
    bundle: PathBuf,
    /// The model folder to write.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// How the weights are stored.
    #[arg(long, value_enum, default_value_t = WeightType::F32)]
    dtype: WeightType,
    /// Record S as the model's default classifier-free guidance scale (what `sample` and
    /// `fidelity` use without --guidance-scale; needs a model trained with conditioning
    /// dropout unless 1). Default: keep the source's.
    #[arg(long, value_name = "S", allow_hyphen_values = true)]
    guidance_scale: Option<f64>,
}

/// Storage type of the written weights.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum WeightType {
    /// 32-bit float, as trained.
    F32,
    /// IEEE half precision (half the size; about 3 significant digits).
    F16,
    /// bfloat16 (half the size; f32's range, about 2 significant digits).
    Bf16,
}

/// Runs `brain-ldm convert`.
pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    let dtype = match args.dtype {
        WeightType::F32 => DType::F32,
        WeightType::F16 => DType::F16,
        WeightType::Bf16 => DType::BF16,
    };
    let out = brain_ldm::convert_model(&args.bundle, &args.out, dtype, args.guidance_scale)?;
    println!("wrote {}", out.display());
    Ok(())
}

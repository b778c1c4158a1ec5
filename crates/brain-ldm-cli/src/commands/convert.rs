//! `brain-ldm convert`: a MONAI bundle folder → a brain-ldm model folder.

use clap::Args;
use std::path::PathBuf;

/// Convert the public MONAI bundle (old-key .pt weights) into a brain-ldm model folder:
/// safetensors weights under MONAI core key names and model.json. The weights are checked
/// against the models first.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The bundle folder (configs/, models/).
    #[arg(long, value_name = "DIR")]
    bundle: PathBuf,
    /// The model folder to write.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// Runs `brain-ldm convert`.
pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    let out = brain_ldm::convert_bundle(&args.bundle, &args.out)?;
    println!("wrote {}", out.display());
    Ok(())
}

//! The subcommands. To add one: write `commands/<name>.rs` with an `Args` struct (its doc
//! comments are the help) and `pub fn run(args) -> anyhow::Result<()>`, then add one variant
//! to [`Command`] and one arm to [`run`].

pub mod convert;
pub mod device;
pub mod eval;
pub mod fidelity;
pub mod info;
pub mod preprocess;
pub mod sample;
pub mod sampler_args;
pub mod synth;
pub mod train;
pub mod volumes;

use clap::{Parser, Subcommand};

/// Brain MRI latent diffusion (a port of MONAI's brain LDM): sample synthetic brains, prepare
/// and measure NIfTI volumes.
#[derive(Debug, Parser)]
#[command(name = "brain-ldm", version, about, long_about = None)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// One variant per subcommand; its help is the doc comment of its `Args` struct.
#[derive(Debug, Subcommand)]
pub enum Command {
    // `brain-ldm sample`
    Sample(sample::SampleArgs),
    // `brain-ldm convert`
    Convert(convert::ConvertArgs),
    // `brain-ldm info`
    Info(info::InfoArgs),
    // `brain-ldm preprocess`
    Preprocess(preprocess::PreprocessArgs),
    // `brain-ldm eval`
    Eval(eval::EvalArgs),
    // `brain-ldm synth`
    Synth(synth::SynthArgs),
    // `brain-ldm volumes`
    Volumes(volumes::VolumesArgs),
    // `brain-ldm train`
    Train(train::TrainArgs),
    // `brain-ldm fidelity`
    Fidelity(fidelity::FidelityArgs),
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Sample(args) => sample::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Info(args) => info::run(args),
        Command::Preprocess(args) => preprocess::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Synth(args) => synth::run(args),
        Command::Volumes(args) => volumes::run(args),
        Command::Train(args) => train::run(args),
        Command::Fidelity(args) => fidelity::run(args),
    }
}

//! `brain-ldm synth`: write a synthetic BIDS cohort made from the MNI152 template.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use brain_ldm_synth::bids::{write_dataset, DatasetOptions, Progress};
use brain_ldm_synth::VoxelSize;
use clap::Args;

/// Write a synthetic cohort with known covariates and ground-truth labels as a BIDS dataset.
///
/// Each subject is made from the MNI152 template by smooth warps that hit its drawn
/// ventricular and brain volume, and is a pure function of (seed, index): the files are
/// byte-identical whatever the thread count. Output: DIR/sub-NNNNNN/anat/sub-NNNNNN_T1w.nii.gz
/// and _dseg.nii.gz (0 background, 1 CSF, 2 GM, 3 WM, 4 ventricles), participants.tsv
/// (volumes in mm³ counted from the labels), dataset_description.json. Uses all cores.
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Number of subjects (indices 0..N).
    #[arg(long)]
    pub n: usize,
    /// Voxel size in mm: 1 (160×224×160), 2 (80×112×80) or 4 (40×56×40).
    #[arg(long, default_value_t = 2.0)]
    pub voxel_size: f64,
    /// The cohort's seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory (created if missing; must be empty unless --resume).
    #[arg(long)]
    pub out: PathBuf,
    /// Continue a dataset made with the same seed and voxel size: complete subjects are
    /// skipped.
    #[arg(long)]
    pub resume: bool,
}

/// Runs `synth`.
pub fn run(args: SynthArgs) -> anyhow::Result<()> {
    let voxel_size = VoxelSize::from_mm(args.voxel_size)?;
    let opts = DatasetOptions {
        n: args.n,
        voxel_size,
        seed: args.seed,
        out: args.out.clone(),
        resume: args.resume,
    };
    eprintln!(
        "synth: {} subjects, {} mm, seed {}, into {} ({} threads)",
        args.n,
        voxel_size.mm(),
        args.seed,
        args.out.display(),
        rayon::current_num_threads()
    );
    let start = Instant::now();
    let bar = Bar::new(start);
    let summary = write_dataset(&opts, &|p| bar.update(p))?;
    bar.finish();
    println!(
        "{}: {} subjects generated, {} already complete, seed {}, {} mm, {:.1} s",
        args.out.display(),
        summary.generated,
        summary.skipped,
        args.seed,
        voxel_size.mm(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A progress bar on stderr: redrawn in place on a terminal, else one line per 10 %.
struct Bar {
    start: Instant,
    terminal: bool,
    /// The last tenth printed (non-terminal output).
    last: Mutex<usize>,
}

impl Bar {
    fn new(start: Instant) -> Bar {
        Bar {
            start,
            terminal: std::io::stderr().is_terminal(),
            last: Mutex::new(0),
        }
    }

    fn update(&self, p: Progress) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let tenth = 10 * p.done / p.total.max(1);
        if !self.terminal && tenth == *last && p.done != p.total {
            return;
        }
        *last = tenth;
        let secs = self.start.elapsed().as_secs_f64();
        let made = p.done - p.skipped;
        let eta = if made > 0 {
            secs / made as f64 * (p.total - p.done) as f64
        } else {
            0.0
        };
        let width = 30;
        let filled = width * p.done / p.total.max(1);
        let line = format!(
            "[{}{}] {}/{} ({} skipped) {:.0} s, ETA {:.0} s",
            "#".repeat(filled),
            " ".repeat(width - filled),
            p.done,
            p.total,
            p.skipped,
            secs,
            eta
        );
        let mut err = std::io::stderr().lock();
        // Progress output is best effort: a closed stderr must not fail the run.
        let _ = if self.terminal {
            write!(err, "\r{line}")
        } else {
            writeln!(err, "{line}")
        };
    }

    fn finish(&self) {
        if self.terminal {
            let _ = writeln!(std::io::stderr());
        }
    }
}

//! `brain-ldm eval --real DIR --fake DIR [--paired] [--json]`: diversity of each set (the
//! paper's mean MS-SSIM over random pairs) and, for reconstructions, per-pair SSIM/PSNR.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context};
use brain_ldm::fidelity::{listed_name, read_listed};
use brain_ldm_metrics::{
    diversity, evaluate, DiversityConfig, DiversityReport, EvalOptions, MsSsimConfig, PairedConfig,
    PairedReport, Progress, SsimConfig, VolumeSource,
};
use clap::Args;
use ndarray::{CowArray, Ix3};
use serde::Serialize;

/// Evaluate generated (or reconstructed) NIfTI volumes against real ones.
///
/// For each of `--real` and `--fake` (every `.nii`, `.nii.gz`, `.hdr` or `.hdr.gz` file in the
/// directory, in file-name order) it reports diversity: the mean 3D MS-SSIM over random
/// distinct pairs of the set (Pinaya et al. 2022: 1000 pairs; lower is more diverse). With
/// `--paired` it also scores `real[i]` against `fake[i]` (the i-th files in name order) by
/// SSIM, PSNR, MSE and MAE, as for autoencoder reconstructions. Metrics match MONAI's
/// `MultiScaleSSIMMetric`, `SSIMMetric` and `PSNRMetric`. Progress goes to stderr, the
/// report to stdout.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Directory of real volumes.
    #[arg(long, value_name = "DIR")]
    pub real: PathBuf,
    /// Directory of generated (or reconstructed) volumes.
    #[arg(long, value_name = "DIR")]
    pub fake: PathBuf,
    /// Also score real[i] against fake[i] (SSIM, PSNR, MSE, MAE); the sets must have the
    /// same number of files.
    #[arg(long)]
    pub paired: bool,
    /// Skip the diversity of the sets (e.g. with --paired on reconstructions).
    #[arg(long)]
    pub no_diversity: bool,
    /// Number of random distinct pairs per set for diversity. Default: 1000 (the paper's),
    /// or every pair when a set has fewer.
    #[arg(long)]
    pub pairs: Option<usize>,
    /// Seed of the pair draw (the same seed and set sizes give the same pairs).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// MS-SSIM Gaussian window size (σ 1.5, five scales: volumes need ≥ 16 × this per axis).
    #[arg(long, default_value_t = 4)]
    pub kernel_size: usize,
    /// Data range of the intensities (SSIM's L, PSNR's max_val); 1 for volumes in [0, 1].
    #[arg(long, default_value_t = 1.0)]
    pub data_range: f64,
    /// Print one JSON object (fields documented in docs/cli.md) instead of text.
    #[arg(long)]
    pub json: bool,
    /// No progress messages or warnings on stderr (errors are still printed).
    #[arg(long)]
    pub quiet: bool,
}

/// The `--json` output: fields are only ever added while `format_version` stays 1.
#[derive(Debug, Serialize)]
pub struct EvalJson {
    /// Version of this JSON layout (1).
    pub format_version: u32,
    /// The `--real` directory as given.
    pub real_dir: String,
    /// The `--fake` directory as given.
    pub fake_dir: String,
    /// Files in the real set, in the order used.
    pub real_files: Vec<String>,
    /// Files in the fake set, in the order used.
    pub fake_files: Vec<String>,
    /// Seed of the pair draw.
    pub seed: u64,
    /// Diversity of the real set (null with `--no-diversity`).
    pub real_diversity: Option<DiversityReport>,
    /// Diversity of the fake set (null with `--no-diversity`).
    pub fake_diversity: Option<DiversityReport>,
    /// Paired scores (null without `--paired`).
    pub paired: Option<PairedReport>,
    /// Wall-clock seconds of the whole evaluation.
    pub seconds: f64,
}

/// The NIfTI files of one directory, read one at a time.
struct NiftiDir {
    files: Vec<PathBuf>,
    /// Intensities are expected in `[0, data_range]`; a file outside gets one warning.
    data_range: f64,
    /// No warnings on stderr.
    quiet: bool,
    /// Files already warned about (shared by both sets: a directory may be given twice).
    warned: Arc<Mutex<HashSet<PathBuf>>>,
}

impl NiftiDir {
    /// Lists the NIfTI files of `dir` in name order.
    fn open(
        dir: &Path,
        flag: &str,
        args: &EvalArgs,
        warned: &Arc<Mutex<HashSet<PathBuf>>>,
    ) -> anyhow::Result<NiftiDir> {
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("{flag} {}: cannot read directory", dir.display()))?;
        let mut files = Vec::new();
        for entry in entries {
            let path = entry
                .with_context(|| format!("{flag} {}: cannot list directory", dir.display()))?
                .path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            let nifti = [".nii", ".nii.gz", ".hdr", ".hdr.gz"]
                .iter()
                .any(|ext| name.ends_with(ext));
            if nifti && path.is_file() {
                files.push(path);
            }
        }
        if files.is_empty() {
            bail!(
                "{flag} {}: no NIfTI files (.nii, .nii.gz, .hdr, .hdr.gz) in the directory",
                dir.display()
            );
        }
        files.sort();
        Ok(NiftiDir {
            files,
            data_range: args.data_range,
            quiet: args.quiet,
            warned: Arc::clone(warned),
        })
    }

    /// Warns once per file whose intensities leave `[0, data_range]`: SSIM's constants
    /// and PSNR's peak assume that range (e.g. an unscaled uint8 scan needs
    /// `brain-ldm preprocess` or `--data-range 255`).
    fn warn_range(&self, path: &Path, data: &ndarray::Array3<f32>) {
        let (lo, hi) = data
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let slack = 1e-3 * self.data_range;
        if f64::from(lo) >= -slack && f64::from(hi) <= self.data_range + slack {
            return;
        }
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if warned.insert(path.to_path_buf()) {
            eprintln!(
                "warning: {}: intensities span [{lo}, {hi}], outside [0, {}] (--data-range); \
                 SSIM, MS-SSIM and PSNR assume that range",
                path.display(),
                self.data_range
            );
        }
    }

    fn names(&self) -> Vec<String> {
        self.files.iter().map(|p| p.display().to_string()).collect()
    }
}

impl VolumeSource for NiftiDir {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn name(&self, index: usize) -> String {
        listed_name(&self.files, index)
    }

    fn load(&self, index: usize) -> brain_ldm_metrics::Result<CowArray<'_, f32, Ix3>> {
        let data = read_listed(&self.files, index)?;
        match self.files.get(index) {
            Some(path) if !self.quiet => self.warn_range(path, &data),
            _ => {}
        }
        Ok(CowArray::from(data))
    }
}

/// Prints progress lines to stderr: at most about 20 per stage, plus the last.
struct Reporter {
    quiet: bool,
    last: Mutex<(&'static str, usize)>,
}

impl Reporter {
    fn report(&self, p: Progress) {
        if self.quiet {
            return;
        }
        let step = p.total.div_ceil(20).max(1);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let new_stage = last.0 != p.stage;
        if new_stage || p.done == p.total || p.done >= last.1 + step {
            eprintln!("{}: {}/{}", p.stage, p.done, p.total);
            *last = (p.stage, p.done);
        }
    }
}

/// Runs `eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    if !(args.data_range.is_finite() && args.data_range > 0.0) {
        bail!("--data-range {}: must be finite and > 0", args.data_range);
    }
    if args.no_diversity && !args.paired {
        bail!("nothing to compute: --no-diversity without --paired");
    }
    let warned = Arc::new(Mutex::new(HashSet::new()));
    let real = NiftiDir::open(&args.real, "--real", &args, &warned)?;
    let fake = NiftiDir::open(&args.fake, "--fake", &args, &warned)?;
    if args.paired && real.len() != fake.len() {
        bail!(
            "--paired needs as many files in --fake as in --real: {} has {}, {} has {}",
            args.real.display(),
            real.len(),
            args.fake.display(),
            fake.len()
        );
    }
    let reporter = Reporter {
        quiet: args.quiet,
        last: Mutex::new(("", 0)),
    };
    let progress = |p: Progress| reporter.report(p);
    if !args.quiet {
        eprintln!(
            "eval: {} real, {} fake volumes; seed {}",
            real.len(),
            fake.len(),
            args.seed
        );
    }
    let start = Instant::now();

    let ms_ssim = MsSsimConfig {
        data_range: args.data_range,
        ..MsSsimConfig::default().with_kernel_size(args.kernel_size)
    };
    let mut diversities = Vec::new();
    if !args.no_diversity {
        for (set, stage, flag) in [
            (&real, "diversity real", "--real"),
            (&fake, "diversity fake", "--fake"),
        ] {
            let cfg = DiversityConfig {
                pairs: pair_count(args.pairs, set.len(), flag, args.quiet)?,
                seed: args.seed,
                ms_ssim: ms_ssim.clone(),
            };
            diversities.push(
                diversity(set, &cfg, stage, &progress)
                    .with_context(|| format!("diversity of {flag} {}", set_dir(&args, flag)))?,
            );
        }
    }
    let paired = if args.paired {
        let opts = EvalOptions {
            diversity: None,
            paired: Some(PairedConfig {
                ssim: SsimConfig {
                    data_range: args.data_range,
                    ..SsimConfig::default()
                },
                max_val: args.data_range,
            }),
        };
        evaluate(&real, &fake, &opts, None, &progress)
            .context("paired scores of --real vs --fake")?
            .paired
    } else {
        None
    };
    let mut diversities = diversities.into_iter();
    let report = EvalJson {
        format_version: 1,
        real_dir: args.real.display().to_string(),
        fake_dir: args.fake.display().to_string(),
        real_files: real.names(),
        fake_files: fake.names(),
        seed: args.seed,
        real_diversity: diversities.next(),
        fake_diversity: diversities.next(),
        paired,
        seconds: start.elapsed().as_secs_f64(),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("serialising the report")?
        );
    } else {
        print_text(&report);
    }
    Ok(())
}

/// The number of pairs for a set of `n`: `--pairs` as given (checked by the library), or
/// 1000 capped at every pair of the set.
fn pair_count(
    requested: Option<usize>,
    n: usize,
    flag: &str,
    quiet: bool,
) -> anyhow::Result<usize> {
    if n < 2 {
        bail!("{flag}: diversity needs at least 2 volumes, the directory has {n} (use --no-diversity to skip it)");
    }
    Ok(match requested {
        Some(p) => p,
        None => {
            let available = n * (n - 1) / 2;
            if available < 1000 && !quiet {
                eprintln!(
                    "{flag}: {n} volumes have only {available} distinct pairs; using all of them (the paper used 1000)"
                );
            }
            available.min(1000)
        }
    })
}

fn set_dir(args: &EvalArgs, flag: &str) -> String {
    let dir = if flag == "--real" {
        &args.real
    } else {
        &args.fake
    };
    dir.display().to_string()
}

fn print_text(r: &EvalJson) {
    println!("real:  {} ({} volumes)", r.real_dir, r.real_files.len());
    println!("fake:  {} ({} volumes)", r.fake_dir, r.fake_files.len());
    println!("seed:  {}", r.seed);
    for (label, d) in [("real", &r.real_diversity), ("fake", &r.fake_diversity)] {
        if let Some(d) = d {
            println!(
                "diversity {label}: MS-SSIM {:.4} ± {:.4} over {} pairs (kernel {}, lower is more diverse)",
                d.mean_ms_ssim,
                d.std_ms_ssim,
                d.pairs.len(),
                d.config.ms_ssim.kernel_size
            );
        }
    }
    if let Some(p) = &r.paired {
        println!(
            "paired: {} pairs, mean SSIM {:.4}, PSNR {:.2} dB, MSE {:.6}, MAE {:.6}",
            p.pairs.len(),
            p.mean_ssim,
            p.mean_psnr,
            p.mean_mse,
            p.mean_mae
        );
        for s in &p.pairs {
            println!(
                "  {} vs {}: SSIM {:.4}, PSNR {:.2} dB",
                s.fake, s.real, s.ssim, s.psnr
            );
        }
    }
    println!("time:  {:.1} s", r.seconds);
}

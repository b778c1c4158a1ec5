//! The fidelity report: its numbers (`fidelity.json`), the docs-ready markdown
//! (`fidelity.md`), one CSV row per generated brain (`measurements.csv`) and the figure
//! grids (one PNG per sweep and the extrapolation; none for the diversity and
//! training-subject samples).

use super::stats::{line_fit, LineFit, Summary};
use super::{DrawnConditioning, Experiment, FixedCovariates};
use crate::covariates::{Conditioning, CovariateScaling, Covariates, Sex};
use crate::error::{Error, Result};
use crate::output::{write_atomically, write_grey_png, GreyImage};
use brain_ldm_metrics::{DiversityReport, MsSsimConfig};
use brain_ldm_synth::labels::Volumes;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One generated brain: what was asked for and what was measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measurement {
    /// The experiment it belongs to.
    pub experiment: Experiment,
    /// Its grid row (the requested value's position; 0 for diversity and training-subject
    /// samples).
    pub row: usize,
    /// Its grid column (the seed column; the sample's number for diversity and
    /// training-subject samples).
    pub column: usize,
    /// The run seed.
    pub seed: u64,
    /// Its noise stream: `(seed, index)` determines the starting noise.
    pub index: u64,
    /// The normalised conditioning (`None`: unconditional).
    pub conditioning: Option<Conditioning>,
    /// The same in physical units.
    pub covariates: Option<Covariates>,
    /// The volumes measured on the generated image (`None` when the volumetry failed).
    pub volumes: Option<Volumes>,
    /// Why the volumetry failed.
    pub error: Option<String>,
}

/// One requested value of a sweep and the volumes measured at it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepRow {
    /// The varied covariate, normalised.
    pub requested_normalised: f64,
    /// The same in physical units (mm³ or years).
    pub requested: f64,
    /// Measured ventricular volume (mm³) over the seeds.
    pub ventricular: Summary,
    /// Measured brain volume (mm³) over the seeds.
    pub brain: Summary,
    /// Measured intracranial volume (mm³) over the seeds.
    pub icv: Summary,
}

/// One sweep (or the extrapolation): the measured volumes per requested value and their
/// fits on the requested value over the single samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepReport {
    /// Which sweep.
    pub experiment: Experiment,
    /// The varied covariate in words.
    pub covariate: String,
    /// Its physical unit.
    pub unit: String,
    /// One row per requested value, in grid order.
    pub rows: Vec<SweepRow>,
    /// Measured ventricular volume on the requested value (per sample).
    pub ventricular_fit: LineFit,
    /// Measured brain volume on the requested value (per sample).
    pub brain_fit: LineFit,
    /// Mean measured ventricular volume at the last requested value over that at the first.
    pub ventricular_last_over_first: Option<f64>,
    /// Mean measured brain volume at the last requested value over that at the first.
    pub brain_last_over_first: Option<f64>,
    /// Samples the volumetry could not measure (left out of every number).
    pub failures: usize,
}

impl SweepReport {
    /// The report of `experiment`, whose rows asked for `(normalised, physical)` values of
    /// covariate `index` (1 age, 2 ventricular, 3 brain volume).
    pub(crate) fn new(
        experiment: Experiment,
        index: usize,
        values: &[(f64, f64)],
        measurements: &[Measurement],
    ) -> SweepReport {
        let ours: Vec<&Measurement> = measurements
            .iter()
            .filter(|m| m.experiment == experiment)
            .collect();
        let (mut x, mut vent, mut brain) = (Vec::new(), Vec::new(), Vec::new());
        let rows: Vec<SweepRow> = values
            .iter()
            .enumerate()
            .map(|(r, &(normalised, requested))| {
                let measured: Vec<&Volumes> = ours
                    .iter()
                    .filter(|m| m.row == r)
                    .filter_map(|m| m.volumes.as_ref())
                    .collect();
                let pick =
                    |f: fn(&Volumes) -> f64| measured.iter().map(|v| f(v)).collect::<Vec<_>>();
                let (v, b, i) = (
                    pick(|v| v.ventricular_volume),
                    pick(|v| v.brain_volume),
                    pick(|v| v.icv),
                );
                x.extend(std::iter::repeat_n(requested, v.len()));
                vent.extend(&v);
                brain.extend(&b);
                SweepRow {
                    requested_normalised: normalised,
                    requested,
                    ventricular: Summary::of(&v),
                    brain: Summary::of(&b),
                    icv: Summary::of(&i),
                }
            })
            .collect();
        let ratio = |f: fn(&SweepRow) -> Option<f64>| {
            let (first, last) = (rows.first().and_then(f)?, rows.last().and_then(f)?);
            (first != 0.0).then(|| last / first)
        };
        let (covariate, unit) = match index {
            1 => ("age", "years"),
            2 => ("ventricular volume", "mm³"),
            _ => ("brain volume", "mm³"),
        };
        SweepReport {
            experiment,
            covariate: covariate.into(),
            unit: unit.into(),
            ventricular_fit: line_fit(&x, &vent),
            brain_fit: line_fit(&x, &brain),
            ventricular_last_over_first: ratio(|r| r.ventricular.mean),
            brain_last_over_first: ratio(|r| r.brain.mean),
            failures: ours.iter().filter(|m| m.volumes.is_none()).count(),
            rows,
        }
    }
}

/// The samples conditioned on covariates of random training subjects (the paper's
/// r = 0.972 measurement): measured against requested values over single samples, the
/// requests following the training distribution rather than sweeping one covariate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubjectsReport {
    /// What the samples were conditioned on.
    pub conditioning: DrawnConditioning,
    /// Samples generated for the part (measured ones and failures).
    pub samples: usize,
    /// Requested ventricular volume (mm³) over the measured samples.
    pub requested_ventricular: Summary,
    /// Measured ventricular volume (mm³).
    pub measured_ventricular: Summary,
    /// Requested brain volume (mm³) over the measured samples.
    pub requested_brain: Summary,
    /// Measured brain volume (mm³).
    pub measured_brain: Summary,
    /// Requested age (years) over the measured samples.
    pub requested_age: Summary,
    /// Measured on requested ventricular volume (per sample).
    pub ventricular_fit: LineFit,
    /// Measured on requested brain volume (per sample).
    pub brain_fit: LineFit,
    /// Measured ventricular volume on requested age (mm³ per year). With training
    /// subjects' covariates, age varies together with the requested volumes, so this is not
    /// age's effect alone.
    pub age_ventricular_fit: LineFit,
    /// Measured brain volume on requested age (mm³ per year), likewise.
    pub age_brain_fit: LineFit,
    /// Samples the volumetry could not measure (left out of every number).
    pub failures: usize,
}

impl SubjectsReport {
    /// The report of the [`Experiment::TrainingSubjects`] samples among `measurements`,
    /// conditioned on `conditioning`.
    pub(crate) fn new(conditioning: DrawnConditioning, measurements: &[Measurement]) -> Self {
        let ours: Vec<&Measurement> = measurements
            .iter()
            .filter(|m| m.experiment == Experiment::TrainingSubjects)
            .collect();
        let measured: Vec<(&Covariates, &Volumes)> = ours
            .iter()
            .filter_map(|m| Some((m.covariates.as_ref()?, m.volumes.as_ref()?)))
            .collect();
        let column = |f: fn(&Covariates, &Volumes) -> f64| -> Vec<f64> {
            measured.iter().map(|&(c, v)| f(c, v)).collect()
        };
        let age = column(|c, _| c.age_years);
        let requested_ventricular = column(|c, _| c.ventricular_volume_mm3);
        let requested_brain = column(|c, _| c.brain_volume_mm3);
        let ventricular = column(|_, v| v.ventricular_volume);
        let brain = column(|_, v| v.brain_volume);
        SubjectsReport {
            conditioning,
            samples: ours.len(),
            requested_ventricular: Summary::of(&requested_ventricular),
            measured_ventricular: Summary::of(&ventricular),
            requested_brain: Summary::of(&requested_brain),
            measured_brain: Summary::of(&brain),
            requested_age: Summary::of(&age),
            ventricular_fit: line_fit(&requested_ventricular, &ventricular),
            brain_fit: line_fit(&requested_brain, &brain),
            age_ventricular_fit: line_fit(&age, &ventricular),
            age_brain_fit: line_fit(&age, &brain),
            failures: ours.len() - measured.len(),
        }
    }

    /// Whether the requests are training subjects' covariates (else the scaling range).
    fn asks_training_subjects(&self) -> bool {
        matches!(
            self.conditioning,
            DrawnConditioning::TrainingCovariates { .. }
        )
    }

    /// What the requests were, in a few words for table labels.
    fn label(&self) -> &'static str {
        if self.asks_training_subjects() {
            "covariates of random training subjects"
        } else {
            "covariates uniform over the scaling range"
        }
    }
}

/// One cohort image passed through the model's autoencoder (latent mean), measured before
/// and after.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reconstruction {
    /// The image file.
    pub file: String,
    /// Volumes measured on the image.
    pub original: Option<Volumes>,
    /// Volumes measured on its reconstruction.
    pub reconstruction: Option<Volumes>,
    /// Mean absolute difference between the two images (both clamped to [0, 1]).
    pub l1: f64,
    /// Why the volumetry failed on either image.
    pub error: Option<String>,
}

impl Reconstruction {
    /// `reconstructions.csv`: a header and one row per image of `images`.
    pub fn csv(images: &[Reconstruction]) -> String {
        let mut out = String::from(
            "file,ventricular_volume_mm3,brain_volume_mm3,icv_mm3,\
             reconstructed_ventricular_volume_mm3,reconstructed_brain_volume_mm3,\
             reconstructed_icv_mm3,l1,error\n",
        );
        for r in images {
            let volumes = |v: Option<&Volumes>| {
                [
                    opt(v.map(|v| v.ventricular_volume)),
                    opt(v.map(|v| v.brain_volume)),
                    opt(v.map(|v| v.icv)),
                ]
                .join(",")
            };
            let _ = writeln!(
                out,
                "{},{},{},{},{}",
                csv_text(Some(&r.file)),
                volumes(r.original.as_ref()),
                volumes(r.reconstruction.as_ref()),
                r.l1,
                csv_text(r.error.as_deref()),
            );
        }
        out
    }
}

/// What the autoencoder keeps of the volumes: a soft ceiling on any model that learns from
/// its latents and decodes through it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReconstructionReport {
    /// The cohort folder.
    pub cohort: String,
    /// Images reconstructed (measured ones and failures).
    pub images: usize,
    /// Mean absolute error per image.
    pub l1: Summary,
    /// Ventricular volume (mm³) measured on the images.
    pub original_ventricular: Summary,
    /// Ventricular volume (mm³) measured on their reconstructions.
    pub reconstructed_ventricular: Summary,
    /// Brain volume (mm³) measured on the images.
    pub original_brain: Summary,
    /// Brain volume (mm³) measured on their reconstructions.
    pub reconstructed_brain: Summary,
    /// Reconstruction's ventricular volume on the image's (per image).
    pub ventricular_fit: LineFit,
    /// Reconstruction's brain volume on the image's (per image).
    pub brain_fit: LineFit,
    /// Images where the volumetry failed on the image or its reconstruction (left out of
    /// every number but `l1`).
    pub failures: usize,
}

impl ReconstructionReport {
    /// The report of `images` from the cohort folder `cohort`.
    pub(crate) fn new(cohort: String, images: &[Reconstruction]) -> Self {
        let measured: Vec<(&Volumes, &Volumes)> = images
            .iter()
            .filter_map(|r| Some((r.original.as_ref()?, r.reconstruction.as_ref()?)))
            .collect();
        // (image's, reconstruction's) value of one volume, per measured image.
        let pairs = |f: fn(&Volumes) -> f64| -> (Vec<f64>, Vec<f64>) {
            measured.iter().map(|&(o, r)| (f(o), f(r))).unzip()
        };
        let (vo, vr) = pairs(|v| v.ventricular_volume);
        let (bo, br) = pairs(|v| v.brain_volume);
        let l1: Vec<f64> = images.iter().map(|r| r.l1).collect();
        ReconstructionReport {
            cohort,
            images: images.len(),
            l1: Summary::of(&l1),
            original_ventricular: Summary::of(&vo),
            reconstructed_ventricular: Summary::of(&vr),
            original_brain: Summary::of(&bo),
            reconstructed_brain: Summary::of(&br),
            ventricular_fit: line_fit(&vo, &vr),
            brain_fit: line_fit(&bo, &br),
            failures: images.len() - measured.len(),
        }
    }
}

/// Diversity of a real cohort.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CohortDiversity {
    /// The cohort folder.
    pub dir: String,
    /// Images in it.
    pub images: usize,
    /// Mean MS-SSIM over its pairs.
    pub report: DiversityReport,
}

/// Diversity of the generated samples, and of the cohort when one was given.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiversityResult {
    /// The MS-SSIM settings used for both sets.
    pub ms_ssim: MsSsimConfig,
    /// What the generated samples were conditioned on.
    pub conditioning: DrawnConditioning,
    /// Mean MS-SSIM over pairs of generated samples.
    pub generated: DiversityReport,
    /// The same over pairs of the cohort's images.
    pub cohort: Option<CohortDiversity>,
}

/// The settings a report was made with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettingsReport {
    /// Sampler name.
    pub scheduler: String,
    /// Denoising steps.
    pub steps: usize,
    /// DDIM's eta.
    pub eta: f64,
    /// Timestep spacing.
    pub spacing: String,
    /// Classifier-free guidance scale.
    pub guidance_scale: f64,
    /// Run seed.
    pub seed: u64,
    /// Samples per grid value.
    pub seeds: usize,
    /// Grid values per sweep.
    pub points: usize,
    /// Pairs per diversity set.
    pub pairs: usize,
    /// Generated samples of the diversity measure.
    pub diversity_samples: usize,
    /// Samples conditioned on covariates of random training subjects (0: part left out).
    pub subjects: usize,
    /// Samples per batch.
    pub batch_size: usize,
    /// Normalised ventricular volumes of the extrapolation, first and last.
    pub extrapolation_range: (f64, f64),
    /// The covariates held fixed in the sweeps.
    pub fixed: FixedCovariates,
    /// The model's covariate scaling (its training range).
    pub covariate_scaling: CovariateScaling,
    /// Generated image shape.
    pub image_shape: [usize; 3],
    /// Voxel size in mm.
    pub voxel_size_mm: [f64; 3],
    /// Samples generated in all.
    pub samples: usize,
}

/// Wall-clock seconds of the parts of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timing {
    /// Denoising and decoding.
    pub sampling: f64,
    /// Volumetry of every sample (and preparing the figure cells).
    pub volumetry: f64,
    /// Reconstructing cohort images through the autoencoder and measuring them.
    pub reconstruction: f64,
    /// MS-SSIM of both sets.
    pub diversity: f64,
    /// The whole run.
    pub total: f64,
}

/// Every number of a fidelity run (`fidelity.json`, with [`Provenance`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FidelityReport {
    /// Version of this layout (1); fields are only added while it stays.
    pub format_version: u32,
    /// The settings.
    pub settings: SettingsReport,
    /// The ventricular-volume sweep (the paper's Figure 2).
    pub ventricular_volume: SweepReport,
    /// The brain-volume sweep.
    pub brain_volume: SweepReport,
    /// The age sweep (the direction of age's effect on the volumes).
    pub age: SweepReport,
    /// Ventricular volume beyond the training range.
    pub extrapolation: SweepReport,
    /// The samples conditioned on covariates of random training subjects (the paper's
    /// r = 0.972); `None` when [`SettingsReport::subjects`] is 0.
    pub training_subjects: Option<SubjectsReport>,
    /// Cohort images through the autoencoder (when a cohort of the model's image shape was
    /// given and the part was not switched off).
    pub reconstruction: Option<ReconstructionReport>,
    /// Diversity of generated (and real) images.
    pub diversity: DiversityResult,
    /// Generated brains the volumetry could not measure.
    pub measurement_failures: usize,
    /// Timing.
    pub seconds: Timing,
}

/// Where a report came from, written into its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provenance {
    /// The model (its folder, or a name for a built-in one).
    pub model: String,
    /// The command line that made the report (empty when not run from one).
    pub command: String,
}

/// A finished run: the report, every measurement and the figure grids.
pub struct FidelityOutcome {
    /// Every number.
    pub report: FidelityReport,
    /// One entry per generated brain, in generation order.
    pub measurements: Vec<Measurement>,
    /// One entry per reconstructed cohort image, in drawing order.
    pub reconstructions: Vec<Reconstruction>,
    /// One figure per grid experiment.
    pub(crate) grids: Vec<(Experiment, GreyImage)>,
}

/// `fidelity.json`: the report with its provenance first.
#[derive(Serialize)]
struct JsonFile<'a> {
    #[serde(flatten)]
    provenance: &'a Provenance,
    #[serde(flatten)]
    report: &'a FidelityReport,
}

/// The figure file of a grid experiment.
fn figure_name(experiment: Experiment) -> String {
    format!("{}.png", experiment.name())
}

impl FidelityOutcome {
    /// Writes `fidelity.md`, `fidelity.json`, `measurements.csv`, `reconstructions.csv`
    /// (when cohort images were reconstructed) and one PNG per grid
    /// (`ventricular_volume.png`, `brain_volume.png`, `age.png`, `extrapolation.png`) into
    /// `dir` (created if needed), each through a temporary file renamed into place; returns
    /// the paths written.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Png`] naming the file.
    pub fn write(&self, dir: impl AsRef<Path>, provenance: &Provenance) -> Result<Vec<PathBuf>> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut written = Vec::new();
        for (experiment, image) in &self.grids {
            let path = dir.join(figure_name(*experiment));
            write_grey_png(&path, image)?;
            written.push(path);
        }
        let json = serde_json::to_string_pretty(&JsonFile {
            provenance,
            report: &self.report,
        })
        .map_err(|e| Error::InvalidRequest(format!("cannot encode fidelity.json: {e}")))?;
        let reconstructions = (!self.reconstructions.is_empty()).then(|| {
            (
                "reconstructions.csv",
                Reconstruction::csv(&self.reconstructions),
            )
        });
        for (name, text) in [
            ("measurements.csv", self.csv()),
            ("fidelity.json", json + "\n"),
            ("fidelity.md", self.report.markdown(provenance)),
        ]
        .into_iter()
        .chain(reconstructions)
        {
            let path = dir.join(name);
            write_atomically(&path, text.as_bytes())?;
            written.push(path);
        }
        Ok(written)
    }

    /// `measurements.csv`: a header and one row per generated brain.
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "experiment,row,column,seed,index,sex,age_years,ventricular_volume_mm3,\
             brain_volume_mm3,sex_normalised,age_normalised,ventricular_volume_normalised,\
             brain_volume_normalised,measured_ventricular_volume_mm3,measured_brain_volume_mm3,\
             measured_icv_mm3,error\n",
        );
        for m in &self.measurements {
            let c = m.covariates.as_ref();
            let sex = c.map_or("", |c| match c.sex {
                Sex::Female => "F",
                Sex::Male => "M",
            });
            let n = |i: usize| opt(m.conditioning.map(|c| f64::from(c.0[i])));
            let v = m.volumes.as_ref();
            let error = csv_text(m.error.as_deref());
            let _ = writeln!(
                out,
                "{},{},{},{},{},{sex},{},{},{},{},{},{},{},{},{},{},{error}",
                m.experiment.name(),
                m.row,
                m.column,
                m.seed,
                m.index,
                opt(c.map(|c| c.age_years)),
                opt(c.map(|c| c.ventricular_volume_mm3)),
                opt(c.map(|c| c.brain_volume_mm3)),
                n(0),
                n(1),
                n(2),
                n(3),
                opt(v.map(|v| v.ventricular_volume)),
                opt(v.map(|v| v.brain_volume)),
                opt(v.map(|v| v.icv)),
            );
        }
        out
    }
}

/// A CSV field: the number, or empty when missing.
fn opt(value: Option<f64>) -> String {
    value.map_or(String::new(), |v| v.to_string())
}

/// A quoted CSV text field (quotes doubled, line breaks as spaces), or empty when missing.
fn csv_text(text: Option<&str>) -> String {
    text.map_or(String::new(), |e| {
        format!("\"{}\"", e.replace('"', "\"\"").replace('\n', " "))
    })
}

/// `value` with `digits` decimals, or `–` when missing.
fn num(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "–".to_string(), |v| format!("{v:.digits$}"))
}

/// A volume in mm³ as an integer with thin-space thousands separators, `–` when missing.
fn mm3(value: Option<f64>) -> String {
    let Some(v) = value else {
        return "–".to_string();
    };
    let digits = format!("{:.0}", v.abs());
    let mut grouped = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push('\u{2009}');
        }
        grouped.push(ch);
    }
    if v.round() < 0.0 {
        format!("-{grouped}")
    } else {
        grouped
    }
}

/// `mean ± sd` of a summary, volumes in mm³.
fn mean_sd(s: &Summary) -> String {
    match (s.mean, s.sd) {
        (Some(m), Some(sd)) => format!("{} ± {}", mm3(Some(m)), mm3(Some(sd))),
        (m, _) => mm3(m),
    }
}

impl FidelityReport {
    /// `fidelity.md`: the command line, the settings and one markdown table per part,
    /// ready to paste into docs.
    pub fn markdown(&self, provenance: &Provenance) -> String {
        let s = &self.settings;
        let f = &s.fixed.covariates;
        let mut md = String::from("# Conditioning fidelity\n\n");
        let _ = writeln!(md, "Model: `{}`  ", provenance.model);
        if !provenance.command.is_empty() {
            let _ = writeln!(md, "Command: `{}`  ", provenance.command);
        }
        let _ = writeln!(
            md,
            "Sampling: {} {} steps (eta {}, {} spacing), guidance scale {}, seed {}; {} samples \
             of {}×{}×{} voxels at {}×{}×{} mm, in {:.0} s (sampling {:.0} s, volumetry {:.0} s, \
             {}MS-SSIM {:.0} s).\n",
            s.scheduler,
            s.steps,
            s.eta,
            s.spacing,
            s.guidance_scale,
            s.seed,
            s.samples,
            s.image_shape[0],
            s.image_shape[1],
            s.image_shape[2],
            s.voxel_size_mm[0],
            s.voxel_size_mm[1],
            s.voxel_size_mm[2],
            self.seconds.total,
            self.seconds.sampling,
            self.seconds.volumetry,
            if self.reconstruction.is_some() {
                format!("reconstructions {:.0} s, ", self.seconds.reconstruction)
            } else {
                String::new()
            },
            self.seconds.diversity,
        );
        let _ = writeln!(
            md,
            "Each sweep asks for {} values over the training range × {} seeds (column c of every \
             figure starts from noise stream c). Held fixed ({}): sex {}, age {:.1} \
             years, ventricular volume {} mm³, brain volume {} mm³. Volumes are measured on the \
             generated images (clamped to [0, 1]) by brain-ldm's label-free volumetry; r and \
             slope are over single samples.{}\n",
            s.points,
            s.seeds,
            s.fixed.source,
            match f.sex {
                Sex::Female => "F",
                Sex::Male => "M",
            },
            f.age_years,
            mm3(Some(f.ventricular_volume_mm3)),
            mm3(Some(f.brain_volume_mm3)),
            if self.measurement_failures > 0 {
                format!(
                    " {} generated brains could not be measured and are left out (see \
                     measurements.csv).",
                    self.measurement_failures
                )
            } else {
                String::new()
            },
        );

        md.push_str("## Summary\n\n| measure | value | paper |\n|---|---|---|\n");
        let v = &self.ventricular_volume;
        let b = &self.brain_volume;
        let a = &self.age;
        let mut rows: Vec<(String, String, &str)> = vec![
            (
                "ventricular volume sweep: r (measured vs requested)".into(),
                num(v.ventricular_fit.pearson_r, 3),
                "– (Figure 2)",
            ),
            (
                "ventricular volume sweep: slope (mm³ per requested mm³)".into(),
                num(v.ventricular_fit.slope, 3),
                "–",
            ),
            (
                "brain volume sweep: r (measured vs requested)".into(),
                num(b.brain_fit.pearson_r, 3),
                "– (Figure 3)",
            ),
            (
                "brain volume sweep: slope (mm³ per requested mm³)".into(),
                num(b.brain_fit.slope, 3),
                "–",
            ),
        ];
        if let Some(t) = &self.training_subjects {
            let paper = if t.asks_training_subjects() {
                "0.972 (SynthSeg, 1000 samples)"
            } else {
                "–"
            };
            rows.push((
                format!("ventricular volume, {}: r", t.label()),
                num(t.ventricular_fit.pearson_r, 3),
                paper,
            ));
            rows.push((
                format!("brain volume, {}: r", t.label()),
                num(t.brain_fit.pearson_r, 3),
                "–",
            ));
        }
        if let Some(r) = &self.reconstruction {
            rows.push((
                "autoencoder: ventricular volume of reconstructions vs originals: r (slope)".into(),
                format!(
                    "{} ({})",
                    num(r.ventricular_fit.pearson_r, 3),
                    num(r.ventricular_fit.slope, 3)
                ),
                "–",
            ));
        }
        let per_year =
            |fit: &LineFit| format!("{} mm³ ({})", num(fit.slope, 0), num(fit.pearson_r, 3));
        rows.push((
            "age sweep: ventricular volume per year (r)".into(),
            per_year(&a.ventricular_fit),
            "larger with age",
        ));
        rows.push((
            "age sweep: brain volume per year (r)".into(),
            per_year(&a.brain_fit),
            "smaller with age",
        ));
        let d = &self.diversity;
        rows.push((
            "diversity: MS-SSIM of generated pairs".into(),
            num(Some(d.generated.mean_ms_ssim), 4),
            "0.6555 (LDM, 1000 pairs)",
        ));
        if let Some(c) = &d.cohort {
            rows.push((
                "diversity: MS-SSIM of cohort pairs".into(),
                num(Some(c.report.mean_ms_ssim), 4),
                "0.6536 (UK Biobank)",
            ));
        }
        for (measure, value, paper) in rows {
            let _ = writeln!(md, "| {measure} | {value} | {paper} |");
        }
        md.push('\n');

        for (sweep, title, note) in [
            (
                v,
                "Ventricular volume",
                "Paper: Figure 2 (its r = 0.972 is over covariates of training subjects, not a \
                 sweep; see below).",
            ),
            (b, "Brain volume", "Paper: Figure 3."),
            (
                a,
                "Age",
                "Ventricles should grow and brain volume shrink with age.",
            ),
            (
                &self.extrapolation,
                "Extrapolation of ventricular volume",
                "Paper: Figure 4 (−0.5: no ventricles; 1.5 and 1.9: very large ones).",
            ),
        ] {
            sweep_markdown(&mut md, sweep, title, note);
        }
        if let Some(t) = &self.training_subjects {
            subjects_markdown(&mut md, t);
        }
        if let Some(r) = &self.reconstruction {
            reconstruction_markdown(&mut md, r);
        }

        md.push_str("## Diversity\n\n");
        let ms = &d.ms_ssim;
        let _ = writeln!(
            md,
            "Mean 3D MS-SSIM over random distinct pairs (lower is more diverse; mode collapse \
             shows as a value near 1). Settings for both sets: {} window of {} (σ {}), {} \
             scales with weights {:?}, data range {}, k1 {}, k2 {}.\n",
            match ms.kernel_type {
                brain_ldm_metrics::KernelType::Gaussian => "Gaussian",
                brain_ldm_metrics::KernelType::Uniform => "uniform",
            },
            ms.kernel_size,
            ms.kernel_sigma,
            ms.weights.len(),
            ms.weights
                .iter()
                .map(|w| (w * 1e4).round() / 1e4)
                .collect::<Vec<_>>(),
            ms.data_range,
            ms.k1,
            ms.k2,
        );
        md.push_str("| set | images | pairs | MS-SSIM (mean ± sd) |\n|---|---|---|---|\n");
        let _ = writeln!(
            md,
            "| generated ({}) | {} | {} | {:.4} ± {:.4} |",
            d.conditioning,
            d.generated.samples,
            d.generated.pairs.len(),
            d.generated.mean_ms_ssim,
            d.generated.std_ms_ssim
        );
        if let Some(c) = &d.cohort {
            let _ = writeln!(
                md,
                "| cohort `{}` | {} | {} | {:.4} ± {:.4} |",
                c.dir,
                c.images,
                c.report.pairs.len(),
                c.report.mean_ms_ssim,
                c.report.std_ms_ssim
            );
        }
        md.push_str(
            "| paper: LDM / DDIM / real UK Biobank (1000 pairs) | | | 0.6555 / 0.6704 / 0.6536 |\n",
        );
        md
    }
}

/// One sweep's section: the table per requested value, the fits and the figure.
fn sweep_markdown(md: &mut String, sweep: &SweepReport, title: &str, note: &str) {
    let _ = writeln!(md, "## {title}\n");
    let unit = &sweep.unit;
    let requested = |r: &SweepRow| {
        if unit == "years" {
            format!("{:.1}", r.requested)
        } else {
            mm3(Some(r.requested))
        }
    };
    let _ = writeln!(
        md,
        "| requested {} (normalised) | requested ({unit}) | measured ventricular volume (mm³) | measured brain volume (mm³) | n |\n|---|---|---|---|---|",
        sweep.covariate
    );
    for r in &sweep.rows {
        let _ = writeln!(
            md,
            "| {:.3} | {} | {} | {} | {} |",
            r.requested_normalised,
            requested(r),
            mean_sd(&r.ventricular),
            mean_sd(&r.brain),
            r.ventricular.n
        );
    }
    let per = if unit == "years" {
        "mm³ per year".to_string()
    } else {
        "mm³ per mm³".to_string()
    };
    let _ = writeln!(
        md,
        "\nOver {} samples: measured ventricular volume r = {}, slope {} {per} (last/first row \
         mean {}); measured brain volume r = {}, slope {} {per} (last/first {}). {note}\n",
        sweep.ventricular_fit.n,
        num(sweep.ventricular_fit.pearson_r, 3),
        num(sweep.ventricular_fit.slope, 3),
        num(sweep.ventricular_last_over_first, 2),
        num(sweep.brain_fit.pearson_r, 3),
        num(sweep.brain_fit.slope, 3),
        num(sweep.brain_last_over_first, 2),
    );
    let _ = writeln!(
        md,
        "![{title}: rows are requested values (top: first), columns seeds]({})\n",
        figure_name(sweep.experiment)
    );
}

/// The training-subjects section: requested and measured volumes, their fits, age's.
fn subjects_markdown(md: &mut String, t: &SubjectsReport) {
    let mut title = t.label().to_string();
    title[..1].make_ascii_uppercase();
    let _ = writeln!(md, "## {title}\n");
    let intro = match t.conditioning {
        DrawnConditioning::TrainingCovariates { subjects } => format!(
            "each conditioned on all four covariates of a random training subject (of \
             {subjects} stored with the model, drawn {} replacement). This is the paper's \
             measurement (r = 0.972, SynthSeg on 1000 samples): measured against requested \
             volume over single samples whose requests follow the training distribution, every \
             covariate varying at once. The sweeps' r above is a different number: one \
             covariate over its whole training range, the others fixed.",
            if t.samples <= subjects {
                "without"
            } else {
                "with"
            }
        ),
        _ => "each conditioned on covariates uniform over the scaling range (sex 0 or 1 at \
              random): the model stores no training covariates, so the requests do not follow \
              the training distribution and r is neither the paper's measurement (r = 0.972 \
              over training subjects' covariates) nor the sweeps' (one covariate at a time)."
            .to_string(),
    };
    let _ = writeln!(md, "{} samples, {intro}\n", t.samples);
    md.push_str(
        "| volume | requested (mm³) | measured (mm³) | r (measured vs requested) | slope (mm³ per mm³) | n |\n|---|---|---|---|---|---|\n",
    );
    for (name, requested, measured, fit) in [
        (
            "ventricular",
            &t.requested_ventricular,
            &t.measured_ventricular,
            &t.ventricular_fit,
        ),
        ("brain", &t.requested_brain, &t.measured_brain, &t.brain_fit),
    ] {
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} |",
            mean_sd(requested),
            mean_sd(measured),
            num(fit.pearson_r, 3),
            num(fit.slope, 3),
            fit.n
        );
    }
    let age = &t.requested_age;
    let _ = writeln!(
        md,
        "\nAge (requested {} ± {} years): measured ventricular volume r = {}, slope {} mm³ per \
         year; measured brain volume r = {}, slope {} mm³ per year.{}{}\n",
        num(age.mean, 1),
        num(age.sd, 1),
        num(t.age_ventricular_fit.pearson_r, 3),
        num(t.age_ventricular_fit.slope, 0),
        num(t.age_brain_fit.pearson_r, 3),
        num(t.age_brain_fit.slope, 0),
        if t.asks_training_subjects() {
            " Age varies together with the volumes here, as in the training subjects, so this \
             is not age's effect alone (the age sweep holds the volumes fixed)."
        } else {
            ""
        },
        if t.failures > 0 {
            format!(" {} samples could not be measured.", t.failures)
        } else {
            String::new()
        }
    );
}

/// The autoencoder section: volumes measured on cohort images and their reconstructions.
fn reconstruction_markdown(md: &mut String, r: &ReconstructionReport) {
    md.push_str("## Autoencoder reconstructions\n\n");
    let _ = writeln!(
        md,
        "{} images of the cohort `{}`, each encoded by the model's autoencoder (latent mean), \
         decoded, clamped to [0, 1] and measured like the generated brains. The diffusion \
         model learns from such latents and every generated brain goes through the same \
         decoder, so what is lost here — a volume shrunk, or varying less than in the images \
         — is hard for a sample to show (a soft ceiling: a sample's latent need not be one \
         the encoder gives). L1 (mean absolute error per image): {} ± {}.\n",
        r.images,
        r.cohort,
        num(r.l1.mean, 4),
        num(r.l1.sd, 4),
    );
    md.push_str(
        "| volume | images (mm³) | reconstructions (mm³) | r (reconstruction vs image) | slope (mm³ per mm³) | n |\n|---|---|---|---|---|---|\n",
    );
    for (name, original, reconstructed, fit) in [
        (
            "ventricular",
            &r.original_ventricular,
            &r.reconstructed_ventricular,
            &r.ventricular_fit,
        ),
        (
            "brain",
            &r.original_brain,
            &r.reconstructed_brain,
            &r.brain_fit,
        ),
    ] {
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} |",
            mean_sd(original),
            mean_sd(reconstructed),
            num(fit.pearson_r, 3),
            num(fit.slope, 3),
            fit.n
        );
    }
    if r.failures > 0 {
        let _ = writeln!(
            md,
            "\nImages the volumetry could not measure, before or after: {} (see reconstructions.csv).",
            r.failures
        );
    }
    md.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measurement(row: usize, vent: Option<f64>) -> Measurement {
        Measurement {
            experiment: Experiment::VentricularVolume,
            row,
            column: 0,
            seed: 0,
            index: 0,
            conditioning: None,
            covariates: None,
            volumes: vent.map(|v| Volumes {
                ventricular_volume: v,
                brain_volume: 1e6,
                icv: 1.5e6,
            }),
            error: vent.is_none().then(|| "blank".to_string()),
        }
    }

    #[test]
    fn sweep_fits_measured_on_requested_physical_values() {
        // Requested 10 000, 30 000, 50 000 mm³; measured = half of it + 1000, one failure.
        let ms = vec![
            measurement(0, Some(6_000.0)),
            measurement(1, Some(16_000.0)),
            measurement(2, Some(26_000.0)),
            measurement(2, None),
        ];
        let values = [(0.0, 10_000.0), (0.5, 30_000.0), (1.0, 50_000.0)];
        let s = SweepReport::new(Experiment::VentricularVolume, 2, &values, &ms);
        assert_eq!(s.rows[1].requested, 30_000.0);
        assert_eq!(s.ventricular_fit.n, 3);
        assert!((s.ventricular_fit.slope.unwrap() - 0.5).abs() < 1e-12);
        assert!((s.ventricular_fit.intercept.unwrap() - 1000.0).abs() < 1e-6);
        assert!((s.ventricular_fit.pearson_r.unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(s.brain_fit.pearson_r, None);
        assert_eq!(s.failures, 1);
        assert!((s.ventricular_last_over_first.unwrap() - 26.0 / 6.0).abs() < 1e-12);
        assert_eq!(s.rows[2].ventricular.n, 1);
    }

    #[test]
    fn training_subjects_fit_measured_on_their_own_requests() {
        // Requested (age, ventricles, brain); measured ventricles = 0.5 · requested + 2000,
        // brain = requested − 100 000; the last sample failed.
        let requests = [
            (50.0, 10_000.0, 1_400_000.0),
            (60.0, 30_000.0, 1_500_000.0),
            (70.0, 20_000.0, 1_300_000.0),
            (80.0, 50_000.0, 1_600_000.0),
        ];
        let mut ms: Vec<Measurement> = requests
            .iter()
            .enumerate()
            .map(|(i, &(age, vent, brain))| Measurement {
                experiment: Experiment::TrainingSubjects,
                column: i,
                covariates: Some(Covariates {
                    sex: Sex::Female,
                    age_years: age,
                    ventricular_volume_mm3: vent,
                    brain_volume_mm3: brain,
                }),
                volumes: (i < 3).then_some(Volumes {
                    ventricular_volume: 0.5 * vent + 2000.0,
                    brain_volume: brain - 100_000.0,
                    icv: 1.5e6,
                }),
                error: (i == 3).then(|| "blank".to_string()),
                ..measurement(0, None)
            })
            .collect();
        // Other parts' samples are not counted.
        ms.push(measurement(0, Some(1.0)));
        let source = DrawnConditioning::TrainingCovariates { subjects: 100 };
        let t = SubjectsReport::new(source, &ms);
        assert_eq!((t.samples, t.failures, t.ventricular_fit.n), (4, 1, 3));
        assert!((t.ventricular_fit.slope.unwrap() - 0.5).abs() < 1e-12);
        assert!((t.ventricular_fit.pearson_r.unwrap() - 1.0).abs() < 1e-12);
        assert!((t.brain_fit.slope.unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(t.requested_age.mean, Some(60.0));
        assert_eq!(t.measured_ventricular.mean, Some(12_000.0));
        // Ages 50, 60, 70 against measured ventricles 7000, 17 000, 12 000: slope 250/year;
        // against measured brain 1.3, 1.4, 1.2 million: slope −5000/year.
        assert!((t.age_ventricular_fit.slope.unwrap() - 250.0).abs() < 1e-9);
        assert!((t.age_brain_fit.slope.unwrap() + 5_000.0).abs() < 1e-6);

        let mut md = String::new();
        subjects_markdown(&mut md, &t);
        for part in [
            "## Covariates of random training subjects",
            "4 samples, each conditioned on all four covariates of a random training subject \
             (of 100 stored with the model, drawn without replacement)",
            "| ventricular | 20\u{2009}000 ± 10\u{2009}000 | 12\u{2009}000 ± 5\u{2009}000 | 1.000 | \
             0.500 | 3 |",
            "slope 250 mm³ per year",
            "1 samples could not be measured",
        ] {
            assert!(md.contains(part), "lacks {part:?}:\n{md}");
        }
        let t = SubjectsReport::new(DrawnConditioning::ScalingRange, &ms[..2]);
        let mut md = String::new();
        subjects_markdown(&mut md, &t);
        assert!(
            md.starts_with("## Covariates uniform over the scaling range"),
            "{md}"
        );
    }

    #[test]
    fn reconstructions_fit_the_reconstructed_volumes_on_the_images() {
        // Reconstructed ventricles = 0.5 · image's − 1000; the third image failed.
        let volumes = |ventricles: f64| Volumes {
            ventricular_volume: ventricles,
            brain_volume: 20.0 * ventricles,
            icv: 1.5e6,
        };
        let images: Vec<Reconstruction> = [10_000.0, 30_000.0, 20_000.0]
            .iter()
            .enumerate()
            .map(|(i, &v)| Reconstruction {
                file: format!("sub-{i}.nii.gz"),
                original: Some(volumes(v)),
                reconstruction: (i < 2).then(|| volumes(0.5 * v - 1000.0)),
                l1: 0.01 * (i + 1) as f64,
                error: (i == 2).then(|| "reconstruction: blank".to_string()),
            })
            .collect();
        let r = ReconstructionReport::new("cohort".into(), &images);
        assert_eq!((r.images, r.failures, r.ventricular_fit.n), (3, 1, 2));
        assert!((r.ventricular_fit.slope.unwrap() - 0.5).abs() < 1e-12);
        assert!((r.brain_fit.slope.unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(r.original_ventricular.mean, Some(20_000.0));
        assert_eq!(r.reconstructed_ventricular.mean, Some(9_000.0));
        assert!((r.l1.mean.unwrap() - 0.02).abs() < 1e-12);

        let mut md = String::new();
        reconstruction_markdown(&mut md, &r);
        for part in [
            "3 images of the cohort `cohort`",
            "| ventricular | 20\u{2009}000 ± 14\u{2009}142 | 9\u{2009}000 ± 7\u{2009}071 | 1.000 | \
             0.500 | 2 |",
            "Images the volumetry could not measure, before or after: 1",
        ] {
            assert!(md.contains(part), "lacks {part:?}:\n{md}");
        }
        let csv = Reconstruction::csv(&images);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[1],
            "\"sub-0.nii.gz\",10000,200000,1500000,4000,80000,1500000,0.01,"
        );
        assert!(
            lines[3].ends_with(",,,0.03,\"reconstruction: blank\""),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn volumes_are_grouped_by_thousands() {
        assert_eq!(mm3(Some(1_234_567.4)), "1\u{2009}234\u{2009}567");
        assert_eq!(mm3(Some(-512.0)), "-512");
        assert_eq!(mm3(Some(999.0)), "999");
        assert_eq!(mm3(None), "–");
    }
}

//! `brain-ldm volumes FILE...`: label-free ventricular, brain and intracranial volume of T1s.

use std::io::Write;
use std::path::PathBuf;

use brain_ldm_synth::volumetry::{check_t1, measure_file};
use clap::Args;
use rayon::prelude::*;

/// Measure ventricular, brain (GM + WM) and intracranial volume of T1 images, without labels.
///
/// Each T1 must be in MNI152 space (as the model's input or `brain-ldm synth` output) with an
/// axis-aligned affine. A 3-class Gaussian mixture with a template prior segments CSF, GM and
/// WM; the ventricles are the CSF components at the template's ventricles. Prints CSV to
/// stdout: file,ventricular_volume,brain_volume,icv (mm³), one row per file in the order
/// given. Every file's header is checked before any is measured; files are measured in
/// parallel.
#[derive(Debug, Args)]
pub struct VolumesArgs {
    /// T1 images (.nii or .nii.gz, 3D).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Runs `volumes`.
pub fn run(args: VolumesArgs) -> anyhow::Result<()> {
    for f in &args.files {
        check_t1(f)?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "file,ventricular_volume,brain_volume,icv")?;
    // Measure a batch per round of threads and print it, so rows appear as they finish.
    let batch = rayon::current_num_threads().max(1);
    for files in args.files.chunks(batch) {
        let rows = files
            .par_iter()
            .map(|f| measure_file(f))
            .collect::<Result<Vec<_>, _>>()?;
        for (f, v) in files.iter().zip(rows) {
            writeln!(
                out,
                "{},{:.1},{:.1},{:.1}",
                csv_field(&f.display().to_string()),
                v.ventricular_volume,
                v.brain_volume,
                v.icv
            )?;
        }
        out.flush()?;
    }
    Ok(())
}

/// Quotes a CSV field when it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("a/b.nii.gz"), "a/b.nii.gz");
        assert_eq!(csv_field("a,b.nii"), "\"a,b.nii\"");
        assert_eq!(csv_field("a\"b.nii"), "\"a\"\"b.nii\"");
    }
}

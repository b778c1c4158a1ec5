//! The built-in demo model follows its covariates: a larger requested ventricular volume gives
//! a larger measured one on average (issue 12's check at CI size; `brain-ldm fidelity` runs the
//! full experiment, docs/fidelity.md); the training-subject samples ask for the covariates of
//! distinct training subjects.

use brain_ldm::fidelity::{Experiment, Fidelity, FidelityConfig};
use brain_ldm::{LatentDiffusionPipeline, SamplingSettings};
use candle_core::Device;

#[test]
fn demo_ventricles_grow_with_the_requested_volume() {
    let device = Device::Cpu;
    let pipeline = LatentDiffusionPipeline::demo(&device).unwrap();
    let config = FidelityConfig {
        points: 2,
        seeds: 4,
        pairs: 1,
        diversity_samples: Some(2),
        subjects: 4,
        sampling: SamplingSettings {
            steps: 20,
            ..SamplingSettings::default()
        },
        batch_size: 8,
        ..FidelityConfig::default()
    };
    let outcome = Fidelity::new(&pipeline, config, None)
        .unwrap()
        .run(&device, &mut |_| {})
        .unwrap();
    let sweep = &outcome.report.ventricular_volume;
    assert_eq!(sweep.failures, 0, "every generated brain is measurable");
    let [low, high] = [&sweep.rows[0], &sweep.rows[1]].map(|row| row.ventricular.mean.unwrap());
    assert!(
        sweep.rows[1].requested > sweep.rows[0].requested && high > 1.2 * low,
        "requested {} → measured {low:.0} mm³, requested {} → measured {high:.0} mm³",
        sweep.rows[0].requested,
        sweep.rows[1].requested
    );

    let training = pipeline.training_covariates.as_deref().unwrap();
    let mut drawn: Vec<usize> = outcome
        .measurements
        .iter()
        .filter(|m| m.experiment == Experiment::TrainingSubjects)
        .map(|m| {
            let c = m.conditioning.unwrap().0;
            training.iter().position(|row| *row == c).unwrap()
        })
        .collect();
    drawn.sort_unstable();
    drawn.dedup();
    assert_eq!(drawn.len(), 4, "four distinct training subjects");
    let subjects = outcome.report.training_subjects.as_ref().unwrap();
    assert_eq!((subjects.samples, subjects.failures), (4, 0));
    assert_eq!(subjects.ventricular_fit.n, 4);
}

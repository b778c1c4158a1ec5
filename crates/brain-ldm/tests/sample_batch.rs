//! Batched sampling with classifier-free guidance (`LatentDiffusionPipeline::sample_batch`)
//! on the built-in demo model (trained with conditioning dropout) and on the shrunk public
//! bundle (tests/fixtures/bundle-small, no null condition), and f16 model folders.

use brain_ldm::schedulers::{NoiseSchedule, PredictionType, StepOutput};
use brain_ldm::{
    convert_bundle, convert_model, Conditioning, LatentDiffusionPipeline, PartialCovariates,
    SampleRequest, SamplingSettings, Scheduler, SchedulerKind, Sex,
};
use candle_core::{DType, Device, Tensor};
use std::path::PathBuf;

fn bundle_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/bundle-small")
}

fn settings(steps: usize) -> SamplingSettings {
    SamplingSettings {
        steps,
        ..SamplingSettings::default()
    }
}

/// `max |a − b| / max |b|`.
fn relative_difference(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    let scale = b.abs().unwrap().max_all().unwrap();
    diff.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap()
}

fn request(conditioning: Option<[f32; 4]>, index: u64) -> SampleRequest {
    SampleRequest {
        conditioning: conditioning.map(Conditioning),
        seed: 11,
        index,
    }
}

fn sample(
    pipeline: &LatentDiffusionPipeline,
    settings: &SamplingSettings,
    guidance: f64,
    requests: &[SampleRequest],
) -> Tensor {
    let mut scheduler = pipeline.scheduler(settings).unwrap();
    pipeline
        .sample_batch(
            scheduler.as_mut(),
            guidance,
            requests,
            &Device::Cpu,
            &mut |_, _| {},
        )
        .unwrap()
}

#[test]
fn a_request_gives_the_same_image_alone_or_in_a_batch() {
    let pipeline = LatentDiffusionPipeline::demo(&Device::Cpu).unwrap();
    let a = request(Some([0.0, 0.8, 0.3, 0.4]), 0);
    let b = request(Some([1.0, 0.2, 0.6, 0.7]), 1);
    let unconditional = request(None, 2);
    // Stochastic DDIM: the step noise must come from each request's own stream.
    let stochastic = SamplingSettings {
        eta: 1.0,
        ..settings(3)
    };
    for guidance in [1.0, 3.0] {
        let batch = sample(
            &pipeline,
            &stochastic,
            guidance,
            &[a.clone(), b.clone(), unconditional.clone()],
        );
        assert_eq!(batch.dims(), [3, 1, 40, 56, 40]);
        for (k, alone) in [&a, &b, &unconditional].into_iter().enumerate() {
            let single = sample(
                &pipeline,
                &stochastic,
                guidance,
                std::slice::from_ref(alone),
            );
            let batched = batch.narrow(0, k, 1).unwrap();
            let diff = relative_difference(&batched, &single);
            assert!(diff < 1e-4, "guidance {guidance}, request {k}: {diff}");
        }
    }
    // `sample` is the one-request batch at guidance 1.
    let mut scheduler = pipeline.scheduler(&stochastic).unwrap();
    let one = pipeline
        .sample(
            scheduler.as_mut(),
            &a.conditioning.unwrap(),
            a.seed,
            a.index,
            &Device::Cpu,
            &mut |_, _| {},
        )
        .unwrap();
    let batched = sample(&pipeline, &stochastic, 1.0, &[a]);
    assert_eq!(relative_difference(&one, &batched), 0.0);
}

/// DDIM that records the model output of each step.
struct Recording {
    inner: Box<dyn Scheduler + Send + Sync>,
    outputs: Vec<Tensor>,
}

impl Scheduler for Recording {
    fn schedule(&self) -> &NoiseSchedule {
        self.inner.schedule()
    }
    fn prediction_type(&self) -> PredictionType {
        self.inner.prediction_type()
    }
    fn set_timesteps(&mut self, n: usize) -> brain_ldm::schedulers::Result<()> {
        self.inner.set_timesteps(n)
    }
    fn timesteps(&self) -> &[usize] {
        self.inner.timesteps()
    }
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> brain_ldm::schedulers::Result<StepOutput> {
        self.outputs.push(model_output.clone());
        self.inner.step(model_output, timestep, sample, noise)
    }
}

/// The guided model output of the first step for `requests` at `guidance`.
fn first_output(
    pipeline: &LatentDiffusionPipeline,
    guidance: f64,
    requests: &[SampleRequest],
) -> Tensor {
    let mut scheduler = Recording {
        inner: pipeline.scheduler(&settings(2)).unwrap(),
        outputs: Vec::new(),
    };
    let mut steps = Vec::new();
    pipeline
        .sample_batch(
            &mut scheduler,
            guidance,
            requests,
            &Device::Cpu,
            &mut |done, total| steps.push((done, total)),
        )
        .unwrap();
    assert_eq!(steps, [(1, 2), (2, 2)]);
    scheduler.outputs.swap_remove(0)
}

#[test]
fn guidance_combines_the_conditional_and_unconditional_outputs() {
    let pipeline = LatentDiffusionPipeline::demo(&Device::Cpu).unwrap();
    let null = pipeline.null_condition.unwrap();
    let conditions = [[0.0, 0.9, 0.2, 0.3], [1.0, 0.1, 0.8, 0.9]];
    let requests: Vec<_> = conditions
        .iter()
        .enumerate()
        .map(|(i, c)| request(Some(*c), i as u64))
        .collect();
    let conditional = first_output(&pipeline, 1.0, &requests);
    let unconditional = first_output(&pipeline, 0.0, &requests);
    let guided = first_output(&pipeline, 2.5, &requests);
    let expected =
        (&unconditional + ((&conditional - &unconditional).unwrap() * 2.5).unwrap()).unwrap();
    let diff = relative_difference(&guided, &expected);
    assert!(diff < 1e-4, "guided output off by {diff}");
    assert!(relative_difference(&conditional, &unconditional) > 1e-3);
    // Scale 0 is the model at its null condition, as an unconditional request at any scale.
    let at_null = first_output(&pipeline, 1.0, &[request(Some(null), 0), request(None, 1)]);
    let none = first_output(&pipeline, 2.5, &[request(None, 0), request(None, 1)]);
    assert!(relative_difference(&unconditional, &at_null) < 1e-5);
    assert!(relative_difference(&unconditional, &none) < 1e-5);
}

#[test]
fn a_model_without_null_condition_refuses_guidance_before_sampling() {
    let pipeline = LatentDiffusionPipeline::open(bundle_dir(), &Device::Cpu).unwrap();
    assert_eq!(pipeline.null_condition, None);
    let conditional = request(Some([1.0, 0.5, 0.5, 0.5]), 0);
    for (guidance, requests, what) in [
        (2.0, vec![conditional.clone()], "guidance scale 2"),
        (0.0, vec![conditional.clone()], "guidance scale 0"),
        (
            1.0,
            vec![conditional.clone(), request(None, 1)],
            "unconditional",
        ),
        (f64::NAN, vec![conditional.clone()], "not a finite number"),
    ] {
        let mut scheduler = pipeline.scheduler(&settings(2)).unwrap();
        let mut steps = 0;
        let err = pipeline
            .sample_batch(
                scheduler.as_mut(),
                guidance,
                &requests,
                &Device::Cpu,
                &mut |_, _| steps += 1,
            )
            .unwrap_err();
        assert!(
            matches!(err, brain_ldm::Error::InvalidRequest(_)),
            "{err:?}"
        );
        assert!(err.to_string().contains(what), "{err}");
        assert_eq!(steps, 0, "sampling started");
    }
    let mut scheduler = pipeline.scheduler(&settings(2)).unwrap();
    let err = pipeline
        .sample_batch(scheduler.as_mut(), 1.0, &[], &Device::Cpu, &mut |_, _| {})
        .unwrap_err();
    assert!(err.to_string().contains("no samples"), "{err}");
    // Open covariates cannot be drawn either: the bundle stores no training distribution.
    let partial = PartialCovariates {
        age_years: Some(70.0),
        ..Default::default()
    };
    let err = pipeline.complete_covariates(&partial, 0, 0).unwrap_err();
    assert!(err.to_string().contains("no training covariates"), "{err}");
}

#[test]
fn the_demo_draws_open_covariates_from_its_training_subjects() {
    let pipeline = LatentDiffusionPipeline::demo(&Device::Cpu).unwrap();
    let rows = pipeline.training_covariates.as_ref().unwrap();
    assert!(rows.len() >= 2);
    let partial = PartialCovariates {
        sex: Some(Sex::Female),
        age_years: Some(70.0),
        ..Default::default()
    };
    let c = pipeline.complete_covariates(&partial, 3, 1).unwrap();
    assert_eq!((c.sex, c.age_years), (Sex::Female, 70.0));
    assert_eq!(c, pipeline.complete_covariates(&partial, 3, 1).unwrap());
    // The drawn volumes are a training subject's (normalised values in [0, 1]).
    let v = pipeline.covariate_scaling.normalise(&c).unwrap().0;
    assert!(v[2..].iter().all(|x| (-1e-4..=1.0001).contains(x)), "{v:?}");
}

#[test]
fn f16_model_folders_load_and_sample_like_f32() {
    let dir = tempfile::tempdir().unwrap();
    let f32_dir = dir.path().join("f32");
    let f16_dir = dir.path().join("f16");
    let bf16_dir = dir.path().join("bf16");
    convert_bundle(bundle_dir(), &f32_dir).unwrap();
    // From the bundle and from a model folder.
    convert_model(bundle_dir(), &f16_dir, DType::F16, None).unwrap();
    convert_model(&f16_dir, &bf16_dir, DType::BF16, None).unwrap();
    let size = |d: &PathBuf| std::fs::metadata(d.join("unet.safetensors")).unwrap().len();
    assert!(
        size(&f16_dir) * 10 < size(&f32_dir) * 6,
        "f16 is not smaller"
    );
    let stored =
        candle_core::safetensors::load(f16_dir.join("unet.safetensors"), &Device::Cpu).unwrap();
    assert!(stored.values().all(|t| t.dtype() == DType::F16));
    assert_eq!(
        std::fs::read_to_string(f16_dir.join("model.json")).unwrap(),
        std::fs::read_to_string(f32_dir.join("model.json")).unwrap()
    );
    let conditioning = request(Some([1.0, 0.7, 0.7, 0.5]), 0);
    let images: Vec<Tensor> = [&f32_dir, &f16_dir, &bf16_dir]
        .iter()
        .map(|d| {
            let pipeline = LatentDiffusionPipeline::open(d, &Device::Cpu).unwrap();
            sample(
                &pipeline,
                &settings(3),
                1.0,
                std::slice::from_ref(&conditioning),
            )
        })
        .collect();
    let f16 = relative_difference(&images[1], &images[0]);
    let bf16 = relative_difference(&images[2], &images[0]);
    eprintln!("relative difference to f32: f16 {f16:.2e}, bf16 {bf16:.2e}");
    assert!(f16 < 5e-3, "f16 off by {f16}");
    assert!(bf16 < 3e-2, "bf16 off by {bf16}");
    let err = convert_model(bundle_dir(), dir.path().join("u8"), DType::U8, None).unwrap_err();
    assert!(err.to_string().contains("f16"), "{err}");
}

#[test]
fn every_scheduler_samples_a_batch() {
    let pipeline = LatentDiffusionPipeline::demo(&Device::Cpu).unwrap();
    for scheduler in [
        SchedulerKind::Ddpm,
        SchedulerKind::Pndm,
        SchedulerKind::DpmSolverPlusPlus,
    ] {
        let settings = SamplingSettings {
            scheduler,
            ..settings(4)
        };
        let images = sample(
            &pipeline,
            &settings,
            2.0,
            &[request(Some([0.0, 0.5, 0.5, 0.5]), 0), request(None, 1)],
        );
        assert_eq!(images.dims(), [2, 1, 40, 56, 40]);
        let finite = images
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .all(|v| v.is_finite());
        assert!(finite, "{scheduler}");
    }
}

//! Volumetry against ground truth on generated cohorts, and the figures of docs/synth.md.
//!
//! Run: `cargo run --release -p brain-ldm-synth --example synth_report -- 200`
//! (the number of subjects per voxel size; writes docs/synth/*.png and prints the table).
//! An optional second argument, e.g. `-- 40 2,4`, evaluates only those voxel sizes and
//! writes only their scatter plots (no histograms, no montage).

mod plot;

use brain_ldm_synth::volumetry::measure_volumes;
use brain_ldm_synth::{draw_covariates, generate_subject, Sex, SynthConfig, VoxelSize};

fn pearson(p: &[(f64, f64)]) -> f64 {
    let n = p.len() as f64;
    let (mx, my) = (
        p.iter().map(|q| q.0).sum::<f64>() / n,
        p.iter().map(|q| q.1).sum::<f64>() / n,
    );
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for &(x, y) in p {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    sxy / (sxx * syy).sqrt()
}

fn median_abs_rel(p: &[(f64, f64)]) -> f64 {
    let mut e: Vec<f64> = p.iter().map(|&(x, y)| ((y - x) / x).abs()).collect();
    e.sort_by(f64::total_cmp);
    e[e.len() / 2]
}

fn mean_rel(p: &[(f64, f64)]) -> f64 {
    p.iter().map(|&(x, y)| (y - x) / x).sum::<f64>() / p.len() as f64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args().nth(1).map_or(Ok(200), |s| s.parse())?;
    let sizes_arg = std::env::args().nth(2);
    let full = sizes_arg.is_none();
    let sizes = match sizes_arg {
        None => vec![VoxelSize::Mm4, VoxelSize::Mm2, VoxelSize::Mm1],
        Some(s) => s
            .split(',')
            .map(|x| VoxelSize::from_mm(x.parse()?).map_err(Into::into))
            .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?,
    };
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/synth");
    std::fs::create_dir_all(&out)?;
    let seed = 0;

    // Covariate histograms (cheap: no anatomy).
    let covs: Vec<_> = (0..5000)
        .map(|i| draw_covariates(seed, i))
        .collect::<Result<_, _>>()?;
    if full {
        let col = |f: &dyn Fn(&brain_ldm_synth::Covariates) -> f64| {
            covs.iter().map(f).collect::<Vec<_>>()
        };
        plot::histogram(&col(&|c| c.age), 44.0, 82.0, 38).save(out.join("hist_age.png"))?;
        plot::histogram(&col(&|c| c.ventricular_volume / 1e3), 0.0, 175.0, 35)
            .save(out.join("hist_ventricles.png"))?;
        plot::histogram(&col(&|c| c.brain_volume / 1e6), 1.0, 2.0, 40)
            .save(out.join("hist_brain.png"))?;
        let males = covs.iter().filter(|c| c.sex == Sex::Male).count();
        println!("covariates of 5000 draws: {males} male");
    }

    println!("| voxel size | n | r ventricles | median abs err ventricles | mean err ventricles | r brain | median abs err brain | mean err brain | seconds/subject |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &vs in &sizes {
        let cfg = SynthConfig {
            seed,
            voxel_size: vs,
        };
        let (mut pv, mut pb) = (Vec::new(), Vec::new());
        let t0 = std::time::Instant::now();
        for i in 0..n {
            let s = generate_subject(&cfg, i)?;
            let m = measure_volumes(s.t1.view(), &s.affine)?;
            pv.push((s.volumes.ventricular_volume, m.ventricular_volume));
            pb.push((s.volumes.brain_volume, m.brain_volume));
        }
        let secs = t0.elapsed().as_secs_f64() / n as f64;
        println!(
            "| {} mm | {n} | {:.3} | {:.1} % | {:+.1} % | {:.3} | {:.1} % | {:+.1} % | {secs:.2} |",
            vs.mm(),
            pearson(&pv),
            100.0 * median_abs_rel(&pv),
            100.0 * mean_rel(&pv),
            pearson(&pb),
            100.0 * median_abs_rel(&pb),
            100.0 * mean_rel(&pb)
        );
        let scale =
            |p: &[(f64, f64)], k: f64| p.iter().map(|&(x, y)| (x / k, y / k)).collect::<Vec<_>>();
        plot::scatter(&scale(&pv, 1e3), 0.0, 180.0)
            .save(out.join(format!("scatter_ventricles_{}mm.png", vs.mm())))?;
        plot::scatter(&scale(&pb, 1e6), 1.0, 2.1)
            .save(out.join(format!("scatter_brain_{}mm.png", vs.mm())))?;
    }

    if !full {
        return Ok(());
    }
    // Montage: 8 subjects at 1 mm spanning the covariate extremes among the first n.
    let first: Vec<_> = covs.iter().take(n as usize).cloned().enumerate().collect();
    let pick = |key: &dyn Fn(&brain_ldm_synth::Covariates) -> f64, max: bool| {
        let it = first.iter().map(|(i, c)| (*i, key(c)));
        let best = if max {
            it.max_by(|a, b| a.1.total_cmp(&b.1))
        } else {
            it.min_by(|a, b| a.1.total_cmp(&b.1))
        };
        best.map_or(0, |b| b.0 as u64)
    };
    let picks = [
        pick(&|c| c.age, false),
        pick(&|c| c.age, true),
        pick(&|c| c.ventricular_volume, false),
        pick(&|c| c.ventricular_volume, true),
        pick(&|c| c.brain_volume, false),
        pick(&|c| c.brain_volume, true),
        pick(
            &|c| {
                if c.sex == Sex::Female {
                    c.head_scale
                } else {
                    9.0
                }
            },
            false,
        ),
        pick(
            &|c| {
                if c.sex == Sex::Male {
                    c.head_scale
                } else {
                    0.0
                }
            },
            true,
        ),
    ];
    let cfg = SynthConfig {
        seed,
        voxel_size: VoxelSize::Mm1,
    };
    let (tw, th) = (160 + 224 + 160, 224);
    let mut img = image::GrayImage::new(tw, th * 8);
    for (row, &i) in picks.iter().enumerate() {
        let s = generate_subject(&cfg, i)?;
        let c = s.covariates;
        println!(
            "montage row {row}: sub-{i:06} {:?} age {:.1} ventricles {:.0} brain {:.0} head scale {:.3}",
            c.sex, c.age, s.volumes.ventricular_volume, s.volumes.brain_volume, c.head_scale
        );
        let (nx, ny, nz) = s.t1.dim();
        let y0 = row as u32 * th;
        let g = |v: f32| image::Luma([(v.clamp(0.0, 1.0) * 255.0) as u8]);
        for j in 0..ny {
            for i2 in 0..nx {
                img.put_pixel(
                    i2 as u32,
                    y0 + (ny - 1 - j) as u32,
                    g(s.t1[[i2, j, nz / 2 + 10]]),
                );
            }
        }
        for k in 0..nz {
            for j in 0..ny {
                img.put_pixel(
                    160 + j as u32,
                    y0 + 32 + (nz - 1 - k) as u32,
                    g(s.t1[[nx / 2 + 4, j, k]]),
                );
            }
        }
        for k in 0..nz {
            for i2 in 0..nx {
                img.put_pixel(
                    384 + i2 as u32,
                    y0 + 32 + (nz - 1 - k) as u32,
                    g(s.t1[[i2, ny / 2 + 12, k]]),
                );
            }
        }
    }
    img.save(out.join("montage.png"))?;
    Ok(())
}

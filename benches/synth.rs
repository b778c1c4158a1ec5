//! Time to generate one synthetic subject (template already decoded) at 1 mm and 2 mm.
//!
//! Run: `cargo bench -p brain-ldm-synth --bench synth`. Results: docs/benchmarks.md.

use brain_ldm_synth::{generate_subject, SynthConfig, VoxelSize};
use criterion::{criterion_group, criterion_main, Criterion};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("synth_subject");
    group.sample_size(10);
    for (name, vs) in [("1mm", VoxelSize::Mm1), ("2mm", VoxelSize::Mm2)] {
        let cfg = SynthConfig {
            seed: 0,
            voxel_size: vs,
        };
        // Decode the template outside the timed loop.
        generate_subject(&cfg, 0).unwrap();
        let mut index = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                index += 1;
                generate_subject(&cfg, index).unwrap()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

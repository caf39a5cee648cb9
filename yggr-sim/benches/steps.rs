//! Simulated steps per second: whole chaos runs (engine, simulated disk and network, and every
//! safety check after every step).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use yggr_sim::{Policy, RunOptions, run};

fn chaos_runs(c: &mut Criterion) {
    let mut group = c.benchmark_group("chaos_run");
    for (nodes, steps) in [(3u64, 1500u64), (5, 1500), (7, 2000)] {
        group.throughput(Throughput::Elements(steps));
        group.bench_function(format!("{nodes}_nodes_{steps}_steps"), |b| {
            let mut seed = 0u64;
            b.iter(|| {
                seed += 1;
                let options = RunOptions::new(black_box(seed), nodes, steps, Policy::Chaos);
                run(&options).unwrap_or_else(|failure| panic!("{failure}"))
            });
        });
    }
    group.finish();
}

criterion_group!(benches, chaos_runs);
criterion_main!(benches);

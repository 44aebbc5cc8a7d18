//! The engine on the DeepBench-style shapes of DESIGN.md, for RNN, LSTM and
//! GRU, inference and training, on the ISA `RNN_ISA` selects (default: the
//! best) and the threads `RAYON_NUM_THREADS` allows (default: all cores).
//!
//! Throughput is in elements/s where one element is one FLOP of the matrix
//! products (`Config::forward_flops`; training counts 3× the forward), so
//! criterion's "Gelem/s" reads as GFLOP/s. Compare with `cargo bench --bench
//! peak` for the fraction of the machine's FMA peak.
//!
//! Run: `cargo bench --bench engine` (or `-- Lstm/inference` to filter).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rnn::rng::SplitMix64;
use rnn::{CellKind, Config, Input, Model, OutputGrads};

/// (H, N, T) from DESIGN.md.
const SHAPES: [(usize, usize, usize); 6] = [
    (256, 1, 100),
    (512, 16, 25),
    (512, 64, 50),
    (1024, 1, 50),
    (1024, 32, 50),
    (2048, 16, 25),
];

fn bench(c: &mut Criterion) {
    for cell in [CellKind::Rnn, CellKind::Lstm, CellKind::Gru] {
        let mut group = c.benchmark_group(format!("{cell:?}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for (hidden, batch, seq_len) in SHAPES {
            let config = Config::builder(cell, hidden, hidden).build().unwrap();
            let flops = config.forward_flops(seq_len, batch);
            let model = Model::random(config, 1);
            let x = SplitMix64::new(2).uniform_vec(seq_len * batch * hidden, -1.0, 1.0);
            let input = Input::new(&x, seq_len, batch);
            let id = format!("H{hidden}-N{batch}-T{seq_len}");

            group.throughput(Throughput::Elements(flops));
            group.bench_function(BenchmarkId::new("inference", &id), |b| {
                b.iter(|| model.forward_inference(&input).unwrap())
            });
            let (out, _) = model.forward_training(&input).unwrap();
            let dy = vec![1.0; out.y.len()];
            group.throughput(Throughput::Elements(3 * flops));
            group.bench_function(BenchmarkId::new("training", &id), |b| {
                b.iter(|| {
                    let (_, trace) = model.forward_training(&input).unwrap();
                    model.backward(&trace, &OutputGrads::new(&dy)).unwrap()
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

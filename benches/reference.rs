//! Speed of the f64 reference engine (`rnn::reference`), the baseline the
//! SIMD engine is measured against ("batch-1 inference at least 5× faster"):
//! the first shape is the engine benchmark's batch-1 shape.
//!
//! Throughput is reported in elements/s where one element is one FLOP of the
//! matrix products (`Config::forward_flops`), so "Gelem/s" reads as GFLOP/s.
//!
//! Run: `cargo bench --bench reference`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rnn::rng::SplitMix64;
use rnn::{CellKind, Config, Input, OutputGrads};

const SHAPES: [(usize, usize, usize); 2] = [(256, 1, 100), (128, 16, 10)]; // (H, N, T)

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("reference");
    group.sample_size(10);
    for cell in [CellKind::Rnn, CellKind::Lstm, CellKind::Gru] {
        for (hidden, batch, seq_len) in SHAPES {
            let config = Config::builder(cell, hidden, hidden).build().unwrap();
            let flops = config.forward_flops(seq_len, batch);
            let params: Vec<f64> = rnn::Model::random(config.clone(), 1)
                .params()
                .iter()
                .map(|&p| f64::from(p))
                .collect();
            let x: Vec<f64> = SplitMix64::new(2)
                .uniform_vec(seq_len * batch * hidden, -1.0, 1.0)
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            let input = Input::new(&x[..], seq_len, batch);
            let id = format!("{cell:?}/H{hidden}-N{batch}-T{seq_len}");

            group.throughput(Throughput::Elements(flops));
            group.bench_function(BenchmarkId::new("inference", &id), |b| {
                b.iter(|| rnn::reference::forward(&config, &params, &input).unwrap())
            });
            // Training: forward with trace + backward, about 3× the forward FLOPs.
            group.throughput(Throughput::Elements(3 * flops));
            group.bench_function(BenchmarkId::new("training", &id), |b| {
                b.iter(|| {
                    let (out, trace) =
                        rnn::reference::forward_training(&config, &params, &input).unwrap();
                    let dy = vec![1.0; out.y.len()];
                    rnn::reference::backward(&config, &params, &trace, &OutputGrads::new(&dy[..]))
                        .unwrap()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

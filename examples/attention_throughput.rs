//! Attention forward and backward throughput on one shape, for the side by
//! side with PyTorch (`benches/attention_torch.py` times the same shapes).
//!
//! Usage: `cargo run --release --example attention_throughput -- SCORE T N E M`
//! with SCORE = dot | general | additive (attention size E), T encoder
//! steps, N items, E = D features, M decoder steps attended at once. Each
//! item's length is T. Prints milliseconds and GFLOP/s of the forward
//! (the memory, i.e. the keys, and the attention of all M steps) and of
//! forward + backward, FLOPs counted as the score and context products:
//! 4·M·N·T·E forward, 8·M·N·T·E more backward (the projections of general
//! and additive scores are extra work not counted). Also the memory alone
//! and the attention alone over a memory made before (a decoder makes the
//! memory once per sequence, then attends at every step). Threads: one (the
//! attention runs on the calling thread).

use rnn::attention::{Attention, Score};
use rnn::rng::SplitMix64;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        return Err("usage: attention_throughput SCORE T N E M".into());
    }
    let score = Score::ALL
        .into_iter()
        .find(|s| s.name() == args[1])
        .ok_or("SCORE: dot, general or additive")?;
    let num = |i: usize| {
        args[i]
            .parse::<usize>()
            .map_err(|_| format!("{} is not a count", args[i]))
    };
    let (t, n, e, m) = (num(2)?, num(3)?, num(4)?, num(5)?);
    let layer = Attention::new(score, e, e, e, 1)?;
    let mut rng = SplitMix64::new(2);
    let enc = rng.uniform_vec(t * n * e, -1.0, 1.0);
    let queries = rng.uniform_vec(m * n * e, -1.0, 1.0);
    let d_context = rng.uniform_vec(m * n * e, -1.0, 1.0);
    let forward = || -> rnn::Result<_> {
        let memory = layer.memory(&enc, t, n, None)?;
        let out = layer.attend(&memory, &queries)?;
        Ok((memory, out))
    };
    let training = || -> rnn::Result<()> {
        let (memory, out) = forward()?;
        let mut grads = layer.start_backward(&memory)?;
        std::hint::black_box(
            layer.backward(&memory, &queries, &out, &d_context, None, &mut grads)?,
        );
        std::hint::black_box(layer.finish_backward(&memory, grads)?);
        Ok(())
    };
    // Median of repeated timings, each at least 50 ms.
    let time = |f: &dyn Fn() -> rnn::Result<()>| -> rnn::Result<f64> {
        f()?;
        let mut reps = 1;
        loop {
            let start = Instant::now();
            for _ in 0..reps {
                f()?;
            }
            if start.elapsed().as_secs_f64() > 0.05 {
                break;
            }
            reps *= 2;
        }
        let mut samples = Vec::new();
        for _ in 0..7 {
            let start = Instant::now();
            for _ in 0..reps {
                f()?;
            }
            samples.push(start.elapsed().as_secs_f64() / reps as f64);
        }
        samples.sort_by(f64::total_cmp);
        Ok(samples[3])
    };
    let fwd = time(&|| forward().map(|r| std::mem::drop(std::hint::black_box(r))))?;
    let memory_only = time(&|| {
        layer
            .memory(&enc, t, n, None)
            .map(|r| std::mem::drop(std::hint::black_box(r)))
    })?;
    // A decoder makes the memory once per sequence and attends every step.
    let memory = layer.memory(&enc, t, n, None)?;
    let attend_only = time(&|| {
        layer
            .attend(&memory, &queries)
            .map(|r| std::mem::drop(std::hint::black_box(r)))
    })?;
    let train = time(&training)?;
    let flops = (m * n * t * e) as f64;
    println!(
        "attention {} T{t} N{n} E{e} M{m} on {}: forward {:.3} ms (memory {:.3} ms, attend {:.3} ms), {:.1} GFLOP/s; forward+backward {:.3} ms, {:.1} GFLOP/s",
        score.name(),
        layer.isa()?.name(),
        fwd * 1e3,
        memory_only * 1e3,
        attend_only * 1e3,
        4.0 * flops / fwd / 1e9,
        train * 1e3,
        12.0 * flops / train / 1e9
    );
    Ok(())
}

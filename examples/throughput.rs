//! Quick throughput check of one shape, for profiling (`perf record`) and
//! for comparing ISAs and thread counts without criterion's long runs.
//!
//! Usage: `cargo run --release --example throughput -- CELL H N T [inference]`
//! with CELL = rnn | lstm | gru; input size = H unless `INPUT` is set,
//! `LAYERS` layers (default 1), bidirectional (concatenated) with `BIDIR=1`;
//! the ISA follows `RNN_ISA` and the threads `RAYON_NUM_THREADS`;
//! `PRECISION=bf16` or `int8` runs inference on reduced-precision weights
//! (bf16 says where LSTM and GRU round their rows, see `RNN_BF16_DOT`)
//! (training is then skipped: it runs in f32); `ACTIVATIONS=HardSigmoid,Softsign,Elu`
//! sets each role's ONNX function (onnxruntime's default α and β).
//! Prints GFLOP/s of inference and, unless `inference` is given, of
//! training (forward with trace + backward into gradient buffers kept across
//! steps, counted as 3× the forward FLOPs).
//! `OWNED=1` times `Model::backward`, which returns new gradient vectors,
//! instead of `backward_into` buffers kept across steps.
//! `UPDATE=1` changes a weight after each training step, as an optimiser
//! would, so the next step packs the weights again (what a training loop
//! pays and fixed weights hide). `REPS` sets the timed calls of each
//! (default 20; more for a mean over a longer window, as when another
//! process comes and goes); `SPLIT=1` also times the training forward alone
//! and prints the backward's share. `LATENCY=1` also times each inference
//! call alone, after 50 more warm-up calls, and prints the minimum and the
//! 10th, 50th and 90th percentiles in µs: what a call pays at its best and
//! typically, which a change to the hand-off between threads moves (tens
//! of µs on calls of a few hundred) and a mean blurs.

use rnn::rng::SplitMix64;
use rnn::{CellKind, Config, GradientBuffers, Input, Model, OutputGrads};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        return Err("usage: throughput CELL H N T [inference]".into());
    }
    let cell = match args[1].as_str() {
        "lstm" => CellKind::Lstm,
        "gru" => CellKind::Gru,
        "rnn" => CellKind::Rnn,
        other => return Err(format!("unknown cell {other}").into()),
    };
    let (h, n, t): (usize, usize, usize) = (args[2].parse()?, args[3].parse()?, args[4].parse()?);
    let input_size = std::env::var("INPUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(h);
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
    };
    let direction = match env("BIDIR") {
        Some(1) => rnn::Direction::BidirectionalConcat,
        _ => rnn::Direction::Forward,
    };
    let mut builder = Config::builder(cell, input_size, h)
        .num_layers(env("LAYERS").unwrap_or(1))
        .direction(direction);
    if let Ok(names) = std::env::var("ACTIVATIONS") {
        let functions = names
            .split(',')
            .map(|n| {
                rnn::ActivationKind::from_onnx_name(n)
                    .map(rnn::ActivationFunction::new)
                    .ok_or_else(|| format!("ACTIVATIONS: unknown function {n:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        builder = builder.activations(&functions);
    }
    let config = builder.build()?;
    let flops = config.forward_flops(t, n) as f64;
    let precision = match std::env::var("PRECISION") {
        Ok(name) => rnn::Precision::from_name(&name)?,
        Err(_) => rnn::Precision::F32,
    };
    let mut model = Model::random(config, 1).with_precision(precision);
    let x = SplitMix64::new(2).uniform_vec(t * n * input_size, -1.0, 1.0);
    let input = Input::new(&x, t, n);
    model.forward_inference(&input)?; // packs the weights, warms up
    let reps = env("REPS").unwrap_or(20);
    let inference = mean_seconds(reps, || {
        std::hint::black_box(model.forward_inference(&input)?);
        Ok(())
    })?;
    // Whether bf16 LSTM/GRU layers round their rows (RNN_BF16_DOT).
    let rows = if precision == rnn::Precision::Bf16
        && cell != CellKind::Rnn
        && rnn::kernels::dispatch::bf16_rounds_rows(model.isa()?)?
    {
        " (rows rounded for the bf16 dot product)".to_string()
    } else {
        String::new()
    };
    if precision == rnn::Precision::Bf16 {
        if let Some(rate) = rnn::kernels::dispatch::measure_bf16_dot_rate() {
            println!(
                "the bf16 dot product (vdpbf16ps, bfdot) issues at {rate:.2}x the FMA rate here"
            );
        }
    }
    print!(
        "{cell:?} H{h} N{n} T{t} {direction:?} on {} in {}{rows}: inference {:.3} ms, {:.1} GFLOP/s",
        model.isa()?.name(),
        precision.name(),
        inference * 1e3,
        flops / inference / 1e9
    );
    if env("LATENCY") == Some(1) {
        for _ in 0..50 {
            model.forward_inference(&input)?;
        }
        let mut micros = Vec::with_capacity(reps);
        for _ in 0..reps.max(1) {
            let start = Instant::now();
            std::hint::black_box(model.forward_inference(&input)?);
            micros.push(start.elapsed().as_secs_f64() * 1e6);
        }
        micros.sort_by(f64::total_cmp);
        let at = |q: f64| micros[((micros.len() - 1) as f64 * q) as usize];
        print!(
            " (a call: min {:.1} p10 {:.1} p50 {:.1} p90 {:.1} us)",
            at(0.0),
            at(0.1),
            at(0.5),
            at(0.9)
        );
    }
    if args.get(5).map(String::as_str) != Some("inference") && precision == rnn::Precision::F32 {
        let dy = vec![1.0; model.forward_inference(&input)?.y.len()];
        let update = env("UPDATE") == Some(1);
        let owned = env("OWNED") == Some(1);
        // Kept across steps, as a training loop keeps them (`backward_into`,
        // and the C ABI's `rnn_backward`): new gradient vectors each step
        // map fresh pages each step (BENCHMARKS.md: "Gradient buffers").
        let (mut dx, mut dparams) = (vec![0.0; x.len()], vec![0.0; model.params().len()]);
        let mut train_step = || -> Result<(), rnn::Error> {
            let (_, trace) = model.forward_training(&input)?;
            if owned {
                std::hint::black_box(model.backward(&trace, &OutputGrads::new(&dy))?);
            } else {
                let out = GradientBuffers {
                    dx: Some(&mut dx),
                    dparams: Some(&mut dparams),
                    ..Default::default()
                };
                model.backward_into(&trace, &OutputGrads::new(&dy), out)?;
                std::hint::black_box((&dx, &dparams));
            }
            if update {
                model.params_mut()[0] += 1e-6;
            }
            Ok(())
        };
        train_step()?; // warm-up
        let training = mean_seconds(reps, train_step)?;
        print!(
            "; training{}{} {:.3} ms, {:.1} GFLOP/s",
            if update {
                " with an update per step"
            } else {
                ""
            },
            if owned { " into new vectors" } else { "" },
            training * 1e3,
            3.0 * flops / training / 1e9
        );
        if env("SPLIT") == Some(1) {
            let forward = mean_seconds(reps, || {
                std::hint::black_box(model.forward_training(&input)?);
                Ok(())
            })?;
            print!(
                " (forward {:.2} ms, backward {:.2} ms)",
                forward * 1e3,
                (training - forward) * 1e3
            );
        }
    }
    println!();
    Ok(())
}

/// The mean time of `reps` calls of `call`, in seconds.
fn mean_seconds(
    reps: usize,
    mut call: impl FnMut() -> Result<(), rnn::Error>,
) -> Result<f64, rnn::Error> {
    let start = Instant::now();
    for _ in 0..reps {
        call()?;
    }
    Ok(start.elapsed().as_secs_f64() / reps as f64)
}

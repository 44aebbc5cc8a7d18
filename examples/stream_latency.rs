//! Per-step latency of streaming inference against a step inside one long
//! call, the number issue 15's streaming target is about.
//!
//! Usage: `cargo run --release --example stream_latency -- CELL H [N] [T]`
//! (CELL = rnn | lstm | gru, input size = H unless `INPUT` is set, batch
//! N = 1, T = 200 steps; `PRECISION=bf16|int8` for reduced-precision weights);
//! the threads follow `RAYON_NUM_THREADS`. Prints the median over 15 runs
//! of: one `forward_inference_into` call over T steps divided by T, and T
//! `Stream::step` calls divided by T.

use rnn::rng::SplitMix64;
use rnn::{CellKind, Config, Input, Model};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: stream_latency CELL H [N] [T]".into());
    }
    let cell = match args[1].as_str() {
        "lstm" => CellKind::Lstm,
        "gru" => CellKind::Gru,
        "rnn" => CellKind::Rnn,
        other => return Err(format!("unknown cell {other}").into()),
    };
    let h: usize = args[2].parse()?;
    let n: usize = args.get(3).map_or(Ok(1), |v| v.parse())?;
    let t: usize = args.get(4).map_or(Ok(200), |v| v.parse())?;
    let input = std::env::var("INPUT").map_or(Ok(h), |v| v.parse())?;
    let precision = match std::env::var("PRECISION") {
        Ok(name) => rnn::Precision::from_name(&name)?,
        Err(_) => rnn::Precision::F32,
    };
    let model =
        Model::random(Config::builder(cell, input, h).build()?, 1).with_precision(precision);
    let shapes = rnn::Shapes::new(model.config(), t, n)?;
    let x = SplitMix64::new(2).uniform_vec(shapes.x, -1.0, 1.0);
    let (mut y, mut h_n) = (vec![0.0; shapes.y], vec![0.0; shapes.h]);
    let mut c_n = vec![0.0; shapes.c];
    let mut in_call = Vec::new();
    let mut streamed = Vec::new();
    let mut stream = model.stream(n)?;
    for rep in 0..16 {
        let start = Instant::now();
        let c = model.config().has_cell_state().then_some(&mut c_n[..]);
        model.forward_inference_into(&Input::new(&x, t, n), &mut y, &mut h_n, c)?;
        let whole = start.elapsed().as_secs_f64() / t as f64;
        stream.reset();
        let start = Instant::now();
        for step in x.chunks_exact(n * input) {
            std::hint::black_box(stream.step(step)?);
        }
        let each = start.elapsed().as_secs_f64() / t as f64;
        if rep > 0 {
            in_call.push(whole);
            streamed.push(each);
        }
    }
    assert_eq!(
        stream.h(),
        &h_n[..],
        "the stream ends in the whole call's state"
    );
    let (a, b) = (median(in_call) * 1e6, median(streamed) * 1e6);
    println!(
        "{cell:?} I{input} H{h} N{n} {}: in one call {a:.2} µs/step, streamed {b:.2} µs/step ({:.2}×)",
        precision.name(),
        b / a
    );
    Ok(())
}

//! The spread of one forward inference call's latency: the minimum and
//! the 10th, 50th and 90th percentiles, in µs, of `REPS` calls (default
//! 1000) timed one by one after 50 warm-up calls. Where `throughput`
//! reports a mean, this shows what a call pays at its best and typically,
//! which is what a change to the hand-off between threads moves (a few
//! tens of µs on a call of a few hundred).
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo run --release --example call_latency -- rnn 256 1 100
//! ```
//!
//! The input size is `H`, as in `../shared/peers/`.

use rnn::rng::SplitMix64;
use rnn::{CellKind, Config, Input, Model};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        return Err("usage: call_latency CELL H N T [REPS]".into());
    }
    let cell = match args[1].as_str() {
        "lstm" => CellKind::Lstm,
        "gru" => CellKind::Gru,
        "rnn" => CellKind::Rnn,
        other => return Err(format!("unknown cell {other}").into()),
    };
    let (h, n, t): (usize, usize, usize) = (args[2].parse()?, args[3].parse()?, args[4].parse()?);
    let reps: usize = args.get(5).map_or(Ok(1000), |r| r.parse())?;
    if reps == 0 {
        return Err("REPS must be at least 1".into());
    }
    let model = Model::random(Config::builder(cell, h, h).build()?, 1);
    let x = SplitMix64::new(2).uniform_vec(t * n * h, -1.0, 1.0);
    let input = Input::new(&x, t, n);
    for _ in 0..50 {
        model.forward_inference(&input)?; // packs the weights, warms up
    }
    let mut micros = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        std::hint::black_box(model.forward_inference(&input)?);
        micros.push(start.elapsed().as_secs_f64() * 1e6);
    }
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((reps - 1) as f64 * q) as usize];
    println!(
        "{cell:?} H{h} N{n} T{t}: min {:.1} p10 {:.1} p50 {:.1} p90 {:.1} us",
        at(0.0),
        at(0.1),
        at(0.5),
        at(0.9)
    );
    Ok(())
}

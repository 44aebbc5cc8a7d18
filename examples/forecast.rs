//! Time-series forecasting (many-to-many regression): predict the next value
//! of a noisy sum of sines at every step.
//!
//! An LSTM reads windows of the series and a dense layer turns each step's
//! output into a forecast of the next value, trained on mean squared error.
//! Prints the validation MSE next to two baselines: predicting the last
//! value (persistence) and the noise floor.
//!
//! Run: `cargo run --release --example forecast` (a few seconds)

use rnn::rng::SplitMix64;
use rnn::train::{self, Adam, Dense};
use rnn::{CellKind, Config, Input, Model, OutputGrads};

const WINDOW: usize = 48;
const HIDDEN: usize = 32;
const NOISE: f64 = 0.05;

fn series(len: usize, rng: &mut SplitMix64) -> Vec<f32> {
    (0..len)
        .map(|t| {
            let t = t as f64;
            (0.6 * (0.11 * t).sin()
                + 0.3 * (0.37 * t + 1.0).sin()
                + 0.1 * (0.05 * t).cos()
                + rng.uniform(-NOISE, NOISE) * 3f64.sqrt()) as f32
        })
        .collect()
}

/// `n` random windows: inputs `[WINDOW, n, 1]` and next-step targets.
fn windows(data: &[f32], n: usize, rng: &mut SplitMix64) -> (Vec<f32>, Vec<f32>) {
    let (mut x, mut y) = (vec![0.0; WINDOW * n], vec![0.0; WINDOW * n]);
    for b in 0..n {
        let start = rng.below(data.len() - WINDOW - 1);
        for t in 0..WINDOW {
            x[t * n + b] = data[start + t];
            y[t * n + b] = data[start + t + 1];
        }
    }
    (x, y)
}

fn main() -> Result<(), rnn::Error> {
    let mut rng = SplitMix64::new(1);
    let data = series(6000, &mut rng);
    let (train_part, valid_part) = data.split_at(5000);
    let config = Config::builder(CellKind::Lstm, 1, HIDDEN).build()?;
    let mut lstm = Model::random(config, 2);
    let mut head = Dense::new(HIDDEN, 1, 3);
    let (mut opt_lstm, mut opt_head) = (Adam::new(0.005), Adam::new(0.005));
    let n = 32;
    for step in 1..=400 {
        let (x, y) = windows(train_part, n, &mut rng);
        let (out, trace) = lstm.forward_training(&Input::new(&x, WINDOW, n))?;
        let pred = head.forward(&out.y)?;
        let (loss, dpred) = train::mse(&pred, &y)?;
        let (dy, mut dhead) = head.backward(&out.y, &dpred)?;
        let mut g = lstm.backward(&trace, &OutputGrads::new(&dy))?;
        train::clip_grad_norm_all(&mut [&mut g.dparams, &mut dhead], 1.0);
        opt_lstm.step(lstm.params_mut(), &g.dparams);
        opt_head.step(&mut head.params, &dhead);
        if step % 100 == 0 {
            println!("step {step:3}  training MSE {loss:.5}");
        }
    }
    // Validation on the held-out tail, ignoring the first 8 warm-up steps of each window.
    let (x, y) = windows(valid_part, 200, &mut SplitMix64::new(7));
    let pred = head.forward(&lstm.forward_inference(&Input::new(&x, WINDOW, 200))?.y)?;
    let rows = 8 * 200..WINDOW * 200;
    let mse = |p: &[f32]| {
        p[rows.clone()]
            .iter()
            .zip(&y[rows.clone()])
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f32>()
            / rows.len() as f32
    };
    println!("validation MSE: {:.5}", mse(&pred));
    println!("  persistence (next = last): {:.5}", mse(&x));
    println!("  noise floor: {:.5}", NOISE * NOISE);
    Ok(())
}

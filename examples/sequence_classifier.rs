//! Many-to-one: classify a whole sequence from the network's final state.
//!
//! Each sequence is a noisy sine wave of one of three frequencies, with a
//! random phase and a random length (12 to 40 steps, batched with
//! `seq_lens`, so each item's final state is taken at its own last step). A
//! GRU reads it; a dense layer on `h_n` predicts the frequency class.
//! Prints training loss and the accuracy on held-out sequences.
//!
//! Run: `cargo run --release --example sequence_classifier` (a few seconds)

use rnn::rng::SplitMix64;
use rnn::train::{self, Adam, Dense};
use rnn::{CellKind, Config, Input, Model, OutputGrads};

const CLASSES: usize = 3;
const MAX_LEN: usize = 40;
const HIDDEN: usize = 32;

/// A batch of time-major sequences `[MAX_LEN, n, 1]`, their lengths and classes.
fn batch(rng: &mut SplitMix64, n: usize) -> (Vec<f32>, Vec<usize>, Vec<usize>) {
    let mut x = vec![0.0; MAX_LEN * n];
    let mut lens = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for b in 0..n {
        let class = rng.below(CLASSES);
        let freq = [0.15, 0.3, 0.6][class];
        let phase = rng.uniform(0.0, std::f64::consts::TAU);
        let len = 12 + rng.below(MAX_LEN - 11);
        for t in 0..len {
            x[t * n + b] = ((freq * t as f64 + phase).sin() + rng.uniform(-0.4, 0.4)) as f32;
        }
        lens.push(len);
        labels.push(class);
    }
    (x, lens, labels)
}

fn main() -> Result<(), rnn::Error> {
    let config = Config::builder(CellKind::Gru, 1, HIDDEN).build()?;
    let mut gru = Model::random(config, 1);
    let mut head = Dense::new(HIDDEN, CLASSES, 2);
    let (mut opt_gru, mut opt_head) = (Adam::new(0.01), Adam::new(0.01));
    let mut rng = SplitMix64::new(3);
    let n = 64;
    for step in 1..=300 {
        let (x, lens, labels) = batch(&mut rng, n);
        let input = Input::new(&x, MAX_LEN, n).with_seq_lens(&lens);
        let (out, trace) = gru.forward_training(&input)?;
        // Many-to-one: the loss reads only the final state h_n [1, n, H].
        let logits = head.forward(&out.h_n)?;
        let (loss, dlogits) = train::softmax_cross_entropy(&logits, CLASSES, &labels)?;
        let (dh_n, mut dhead) = head.backward(&out.h_n, &dlogits)?;
        let dy = vec![0.0; out.y.len()];
        let mut g = gru.backward(&trace, &OutputGrads::new(&dy).with_dh_n(&dh_n))?;
        train::clip_grad_norm_all(&mut [&mut g.dparams, &mut dhead], 5.0);
        opt_gru.step(gru.params_mut(), &g.dparams);
        opt_head.step(&mut head.params, &dhead);
        if step % 50 == 0 {
            println!("step {step:3}  cross-entropy {loss:.3}");
        }
    }
    let (x, lens, labels) = batch(&mut SplitMix64::new(99), 1000);
    let out = gru.forward_inference(&Input::new(&x, MAX_LEN, 1000).with_seq_lens(&lens))?;
    let logits = head.forward(&out.h_n)?;
    let correct = logits
        .chunks_exact(CLASSES)
        .zip(&labels)
        .filter(|(row, &label)| {
            let best = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0;
            best == label
        })
        .count();
    println!(
        "validation accuracy: {:.1} % on 1000 held-out sequences (chance: 33.3 %)",
        correct as f64 / 10.0
    );
    Ok(())
}

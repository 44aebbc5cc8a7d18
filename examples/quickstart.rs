//! Quick start: train an LSTM with librnn's forward and backward passes.
//!
//! A "teacher" LSTM with fixed random weights turns random input sequences
//! into target sequences; a "student" LSTM of the same shape starts from
//! other random weights and learns to reproduce the teacher's outputs by
//! plain gradient descent on the mean squared error. The loss printed every
//! few steps falls by more than an order of magnitude.
//!
//! Run: `cargo run --release --example quickstart`

use rnn::rng::SplitMix64;
use rnn::{CellKind, Config, Input, Model, OutputGrads};

const INPUT: usize = 4;
const HIDDEN: usize = 12;
const SEQ_LEN: usize = 16;
const BATCH: usize = 8;
const STEPS: usize = 300;
const LEARNING_RATE: f32 = 0.5;

fn main() -> Result<(), rnn::Error> {
    let config = Config::builder(CellKind::Lstm, INPUT, HIDDEN).build()?;
    let teacher = Model::random(config.clone(), 1);
    let mut student = Model::random(config, 2);
    let mut rng = SplitMix64::new(3);
    println!(
        "fitting an LSTM (input {INPUT}, hidden {HIDDEN}, {} parameters) to a teacher network",
        student.config().num_params()
    );

    let started = std::time::Instant::now();
    let mut first_loss = None;
    for step in 0..=STEPS {
        let x = rng.uniform_vec(SEQ_LEN * BATCH * INPUT, -1.0, 1.0);
        let input = Input::new(&x, SEQ_LEN, BATCH);
        let target = teacher.forward_inference(&input)?.y;

        let (out, trace) = student.forward_training(&input)?;
        let (loss, dy) = rnn::train::mse(&out.y, &target)?;
        let grads = student.backward(&trace, &OutputGrads::new(&dy))?;
        for (p, g) in student.params_mut().iter_mut().zip(&grads.dparams) {
            *p -= LEARNING_RATE * g;
        }

        let first = *first_loss.get_or_insert(loss);
        if step % 50 == 0 {
            println!(
                "step {step:4}  mse {loss:.6}  ({:.1}% of the first)",
                100.0 * loss / first
            );
        }
    }
    println!("{STEPS} training steps in {:.2?}", started.elapsed());
    Ok(())
}

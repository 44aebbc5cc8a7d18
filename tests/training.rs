//! End to end through the API: gradient descent with the gradients of
//! `Model::backward` makes a student network fit a teacher network, for each
//! cell type. A wrong gradient (sign, scale or missing term) stalls this.

use rnn::rng::SplitMix64;
use rnn::{CellKind, Config, Direction, GruVariant, Input, Model, OutputGrads};

/// Mean squared error after each of `steps` SGD steps.
fn fit_teacher(config: Config, steps: usize, learning_rate: f32) -> Vec<f32> {
    let (seq_len, batch) = (8, 6);
    let teacher = Model::random(config.clone(), 11);
    let mut student = Model::random(config.clone(), 12);
    let mut rng = SplitMix64::new(13);
    let mut losses = Vec::new();
    for _ in 0..steps {
        let x = rng.uniform_vec(seq_len * batch * config.input_size(), -1.0, 1.0);
        let input = Input::new(&x, seq_len, batch);
        let target = teacher.forward_inference(&input).unwrap().y;
        let (out, trace) = student.forward_training(&input).unwrap();
        let (loss, dy) = rnn::train::mse(&out.y, &target).unwrap();
        losses.push(loss);
        let grads = student.backward(&trace, &OutputGrads::new(&dy)).unwrap();
        for (p, g) in student.params_mut().iter_mut().zip(&grads.dparams) {
            *p -= learning_rate * g;
        }
    }
    losses
}

fn assert_falls(name: &str, losses: &[f32], below: f32) {
    let first = losses[..5].iter().sum::<f32>() / 5.0;
    let last = losses[losses.len() - 5..].iter().sum::<f32>() / 5.0;
    assert!(
        last < below * first,
        "{name}: loss {first} -> {last}, expected below {below} of the start"
    );
}

#[test]
fn lstm_learns_a_teacher() {
    let config = Config::builder(CellKind::Lstm, 3, 8).build().unwrap();
    assert_falls("lstm", &fit_teacher(config, 150, 0.5), 0.2);
}

#[test]
fn gru_learns_a_teacher() {
    let config = Config::builder(CellKind::Gru, 3, 8)
        .gru_variant(GruVariant::LinearBeforeReset)
        .build()
        .unwrap();
    assert_falls("gru", &fit_teacher(config, 150, 0.5), 0.2);
}

#[test]
fn bidirectional_stacked_rnn_learns_a_teacher() {
    let config = Config::builder(CellKind::Rnn, 3, 8)
        .num_layers(2)
        .direction(Direction::BidirectionalConcat)
        .build()
        .unwrap();
    assert_falls("rnn", &fit_teacher(config, 150, 0.2), 0.2);
}

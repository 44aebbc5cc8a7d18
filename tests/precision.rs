//! Reduced-precision inference (`Precision`): a bf16 model equals, bit for
//! bit, an f32 model whose weights were rounded to bf16, on every ISA and
//! cell variant; its outputs stay within the stated accuracy of the f32
//! model's; training calls are refused; packed weights take half the bytes.

mod common;

use common::{cell_variants, random_batch};
use rnn::precision::round_to_bf16;
use rnn::rng::SplitMix64;
use rnn::{Config, Direction, Input, Isa, Model, OutputGrads, ParamKind, Precision};

/// `model`'s parameters with W, R and the projection rounded to bf16 (the
/// tensors a bf16 model packs in bf16; biases and peepholes stay f32).
fn rounded_weights(model: &Model) -> Model {
    let config = model.config().clone();
    let mut params = model.params().to_vec();
    for layer in 0..config.num_layers() {
        for dir in 0..config.num_directions() {
            for kind in [ParamKind::W, ParamKind::R, ParamKind::Projection] {
                if let Ok(range) = config.param_range(layer, dir, kind) {
                    for p in &mut params[range] {
                        *p = round_to_bf16(*p);
                    }
                }
            }
        }
    }
    Model::from_params(config, params).unwrap()
}

#[test]
fn bf16_equals_f32_with_rounded_weights_bit_for_bit_on_every_isa() {
    let mut rng = SplitMix64::new(11);
    // Odd sizes: input and hidden sizes that fill no vector and leave a
    // half word at the end of a panel's k rows.
    for (input, hidden) in [(3, 5), (8, 17), (1, 2)] {
        for (name, builder) in cell_variants(input, hidden) {
            for direction in [Direction::Forward, Direction::BidirectionalConcat] {
                let config: Config = builder
                    .clone()
                    .num_layers(2)
                    .direction(direction)
                    .build()
                    .unwrap();
                let model = Model::random(config.clone(), 3);
                let oracle = rounded_weights(&model);
                let b = random_batch(&mut rng, &config, 6, 3);
                let mut x = Input::new(&b.x, 6, 3)
                    .with_seq_lens(&b.seq_lens)
                    .with_h0(&b.h0);
                if config.has_cell_state() {
                    x = x.with_c0(&b.c0);
                }
                for isa in Isa::supported() {
                    let bf16 = model
                        .clone()
                        .with_isa(isa)
                        .unwrap()
                        .with_precision(Precision::Bf16);
                    let want = oracle
                        .clone()
                        .with_isa(isa)
                        .unwrap()
                        .forward_inference(&x)
                        .unwrap();
                    let got = bf16.forward_inference(&x).unwrap();
                    let same = |a: &[f32], b: &[f32]| {
                        a.len() == b.len()
                            && a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits())
                    };
                    assert!(
                        same(&got.y, &want.y) && same(&got.h_n, &want.h_n),
                        "{name} {direction:?} I={input} H={hidden} on {}: bf16 differs from f32 with rounded weights",
                        isa.name()
                    );
                    if let (Some(a), Some(b)) = (&got.c_n, &want.c_n) {
                        assert!(same(a, b), "{name} c_n on {}", isa.name());
                    }
                }
            }
        }
    }
}

/// The accuracy statement: weights uniform in ±1/√H (the
/// default), inputs N(0, 1), DESIGN.md's hidden sizes; max |y − y_f32|.
#[test]
fn bf16_outputs_are_within_1e_2_of_f32() {
    let mut worst = 0f32;
    for cell in [rnn::CellKind::Rnn, rnn::CellKind::Lstm, rnn::CellKind::Gru] {
        for (h, n, t) in [(256, 1, 100), (512, 4, 50), (1024, 1, 50)] {
            let config = Config::builder(cell, h, h).build().unwrap();
            let model = Model::random(config, 5);
            let mut rng = SplitMix64::new(9);
            let x: Vec<f32> = (0..t * n * h).map(|_| rng.normal()).collect();
            let input = Input::new(&x, t, n);
            let want = model.forward_inference(&input).unwrap();
            let got = model
                .clone()
                .with_precision(Precision::Bf16)
                .forward_inference(&input)
                .unwrap();
            let err = got
                .y
                .iter()
                .zip(&want.y)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            println!("{cell:?} H{h} N{n} T{t}: max |y_bf16 - y_f32| = {err:.2e}");
            assert!(err.is_finite() && err <= 1e-2, "{cell:?} H{h}: {err}");
            worst = worst.max(err);
        }
    }
    println!("worst: {worst:.2e}");
}

#[test]
fn training_calls_on_a_bf16_model_are_refused() {
    let config = Config::builder(rnn::CellKind::Lstm, 3, 4).build().unwrap();
    let f32_model = Model::random(config, 1);
    let x = vec![0.5f32; 2 * 3];
    let input = Input::new(&x, 2, 1);
    let (out, trace) = f32_model.forward_training(&input).unwrap();
    let bf16 = f32_model.clone().with_precision(Precision::Bf16);
    let err = bf16.forward_training(&input).unwrap_err();
    assert!(matches!(err, rnn::Error::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("bf16"), "{err}");
    let mut y = vec![0.0; out.y.len()];
    let mut h = vec![0.0; out.h_n.len()];
    assert!(matches!(
        bf16.forward_training_into(&input, &mut y, &mut h, None),
        Err(rnn::Error::InvalidArgument(_))
    ));
    // A trace of the f32 model, given to its bf16 self: refused too.
    let mut same = f32_model.clone();
    same.set_precision(Precision::Bf16);
    let dy = vec![1.0; out.y.len()];
    assert!(matches!(
        f32_model
            .clone()
            .with_precision(Precision::Bf16)
            .backward(&trace, &OutputGrads::new(&dy)),
        Err(rnn::Error::InvalidArgument(_))
    ));
    // Back in f32, training works again.
    same.set_precision(Precision::F32);
    assert!(same.forward_training(&input).is_ok());
    // Inference is fine in bf16.
    assert!(bf16.forward_inference(&input).is_ok());
}

#[test]
fn bf16_packs_half_the_forward_weight_bytes() {
    for cell in [rnn::CellKind::Rnn, rnn::CellKind::Lstm, rnn::CellKind::Gru] {
        let config = Config::builder(cell, 256, 256).build().unwrap();
        let model = Model::random(config, 2);
        let f32_bytes = model.packed_bytes().unwrap();
        let bf16_bytes = model
            .clone()
            .with_precision(Precision::Bf16)
            .packed_bytes()
            .unwrap();
        // f32 packs forward and backward panels (4 bytes a weight, twice);
        // bf16 the forward ones at 2 bytes a weight: a quarter, plus the
        // f32 biases.
        let weights = model.params().len();
        println!("{cell:?}: {weights} parameters, f32 packs {f32_bytes} bytes, bf16 {bf16_bytes}");
        assert!(
            bf16_bytes * 4 <= f32_bytes + 64 * 1024,
            "{bf16_bytes} vs {f32_bytes}"
        );
        assert!(
            bf16_bytes >= weights * 2,
            "{bf16_bytes} for {weights} weights"
        );
    }
}

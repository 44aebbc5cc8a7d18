//! Attention (`rnn::attention`) against its f64 oracle
//! (`rnn::reference::attention`): forward and backward on random shapes of
//! every score and on every ISA (NEON under qemu in CI), with masked and
//! zero-length items; the oracle's gradients
//! against finite differences; backward accumulated over step-by-step
//! calls; the errors.

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use rnn::attention::{Attention, Score};
use rnn::reference::attention::{attention_backward, attention_forward, Encoded};
use rnn::rng::SplitMix64;
use rnn::Isa;

#[derive(Clone, Debug)]
struct Case {
    score: Score,
    enc: usize,
    dec: usize,
    attn: usize,
    seq_len: usize,
    batch: usize,
    steps: usize,
    seed: u64,
    /// Index into `Isa::supported()`.
    isa: usize,
}

/// Random tensors of a case: encoder outputs, lengths (some zero, some
/// short), queries, and the gradients flowing in.
struct Data {
    layer: Attention,
    outputs: Vec<f32>,
    lens: Vec<usize>,
    queries: Vec<f32>,
    d_context: Vec<f32>,
    d_weights: Vec<f32>,
}

impl Case {
    fn data(&self) -> Data {
        let mut rng = SplitMix64::new(self.seed);
        let isa = Isa::supported()[self.isa % Isa::supported().len()];
        let layer = Attention::new(self.score, self.enc, self.dec, self.attn, self.seed)
            .unwrap()
            .with_isa(isa)
            .unwrap();
        let (t, n, m) = (self.seq_len, self.batch, self.steps);
        let normal =
            |rng: &mut SplitMix64, len: usize| (0..len).map(|_| rng.normal()).collect::<Vec<f32>>();
        let lens = (0..n)
            .map(|b| match b % 3 {
                0 => t,
                1 => rng.below(t + 1),
                _ => t.saturating_sub(1),
            })
            .collect();
        Data {
            outputs: normal(&mut rng, t * n * self.enc),
            queries: normal(&mut rng, m * n * self.dec),
            d_context: normal(&mut rng, m * n * self.enc),
            d_weights: normal(&mut rng, m * n * t),
            lens,
            layer,
        }
    }
}

fn cases() -> impl Strategy<Value = Case> {
    (
        (0..3usize, 1..40usize, 1..20usize, 1..12usize),
        (0..19usize, 1..5usize, 1..4usize, any::<u64>()),
        0..Isa::supported().len(),
    )
        .prop_map(
            |((score, enc, dec, attn), (seq_len, batch, steps, seed), isa)| {
                let score = Score::ALL[score];
                Case {
                    score,
                    enc,
                    dec: if score == Score::Dot { enc } else { dec },
                    attn,
                    seq_len,
                    batch,
                    steps,
                    seed,
                    isa,
                }
            },
        )
}

/// `|a − b| ≤ tol · (1 + |b|)` everywhere.
fn close(what: &str, a: &[f32], b: &[f64], tol: f64) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("{what}: {} values vs {}", a.len(), b.len()));
    }
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let within = (f64::from(x) - y).abs() <= tol * (1.0 + y.abs());
        if !within {
            return Err(format!("{what}[{i}]: {x} vs {y}"));
        }
    }
    Ok(())
}

fn check(case: &Case, with_d_weights: bool) -> Result<(), String> {
    let data = case.data();
    let (t, n, e) = (case.seq_len, case.batch, case.enc);
    let layer = &data.layer;
    let memory = layer
        .memory(&data.outputs, t, n, Some(&data.lens))
        .map_err(|e| e.to_string())?;
    let got = layer
        .attend(&memory, &data.queries)
        .map_err(|e| e.to_string())?;
    let enc = Encoded {
        outputs: &data.outputs,
        seq_len: t,
        batch: n,
        seq_lens: Some(&data.lens),
    };
    let want = attention_forward(layer, &enc, &data.queries).map_err(|e| e.to_string())?;
    close("context", &got.context, &want.context, 1e-4)?;
    close("weights", &got.weights, &want.weights, 1e-5)?;
    // Masked positions weigh exactly 0; a zero-length item has a zero context.
    for step in 0..case.steps {
        for b in 0..n {
            let row = &got.weights[(step * n + b) * t..][..t];
            if row[data.lens[b]..].iter().any(|&w| w != 0.0) {
                return Err(format!(
                    "step {step} item {b}: a masked position has weight"
                ));
            }
            let context = &got.context[(step * n + b) * e..][..e];
            if data.lens[b] == 0 && context.iter().any(|&c| c != 0.0) {
                return Err(format!("item {b} of length 0 has a context"));
            }
        }
    }
    let d_weights = with_d_weights.then_some(&data.d_weights[..]);
    let mut grads = layer.start_backward(&memory).map_err(|e| e.to_string())?;
    let d_queries = layer
        .backward(
            &memory,
            &data.queries,
            &got,
            &data.d_context,
            d_weights,
            &mut grads,
        )
        .map_err(|e| e.to_string())?;
    let grads = layer
        .finish_backward(&memory, grads)
        .map_err(|e| e.to_string())?;
    let to64 = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    let d_weights64 = d_weights.map(to64);
    let want = attention_backward(
        layer,
        &enc,
        &data.queries,
        &to64(&data.d_context),
        d_weights64.as_deref(),
    )
    .map_err(|e| e.to_string())?;
    close("d_queries", &d_queries, &want.d_queries, 2e-4)?;
    close(
        "d_encoder_outputs",
        &grads.d_encoder_outputs,
        &want.d_encoder_outputs,
        2e-4,
    )?;
    close("d_params", &grads.d_params, &want.d_params, 2e-4)?;
    let all = d_queries
        .iter()
        .chain(&grads.d_encoder_outputs)
        .chain(&grads.d_params);
    if all.clone().any(|g| !g.is_finite()) {
        return Err("a gradient is not finite".into());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        rng_seed: RngSeed::Fixed(0x6174_746e),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn attention_equals_the_f64_reference(case in cases(), with_d_weights in any::<bool>()) {
        let result = check(&case, with_d_weights);
        let isa = Isa::supported()[case.isa].name();
        prop_assert!(result.is_ok(), "{:?} on {}: {:?}", case, isa, result);
    }
}

/// The oracle's analytical gradients against central differences of its
/// own forward (in f64, the loss `Σ dc·context + Σ dw·weights`), for every
/// score, one input at a time.
#[test]
fn reference_gradients_match_finite_differences() {
    for score in Score::ALL {
        let case = Case {
            score,
            enc: 3,
            dec: if score == Score::Dot { 3 } else { 4 },
            attn: 5,
            seq_len: 4,
            batch: 3,
            steps: 2,
            seed: 17,
            isa: 0,
        };
        let data = case.data();
        let (t, n) = (case.seq_len, case.batch);
        let dc: Vec<f64> = data.d_context.iter().map(|&x| f64::from(x)).collect();
        let dw: Vec<f64> = data.d_weights.iter().map(|&x| f64::from(x)).collect();
        let loss = |layer: &Attention, outputs: &[f32], queries: &[f32]| -> f64 {
            let enc = Encoded {
                outputs,
                seq_len: t,
                batch: n,
                seq_lens: Some(&data.lens),
            };
            let out = attention_forward(layer, &enc, queries).unwrap();
            out.context.iter().zip(&dc).map(|(a, b)| a * b).sum::<f64>()
                + out.weights.iter().zip(&dw).map(|(a, b)| a * b).sum::<f64>()
        };
        let enc = Encoded {
            outputs: &data.outputs,
            seq_len: t,
            batch: n,
            seq_lens: Some(&data.lens),
        };
        let grads = attention_backward(&data.layer, &enc, &data.queries, &dc, Some(&dw)).unwrap();
        // d/dx by (L(x + ε) − L(x − ε)) / (x₊ − x₋), with x± as f32 values.
        let eps = 1e-3f32;
        let numeric = |x: f32, eval: &dyn Fn(f32) -> f64| {
            let (up, down) = (x + eps, x - eps);
            (eval(up) - eval(down)) / (f64::from(up) - f64::from(down))
        };
        let agree = |what: &str, i: usize, num: f64, ana: f64| {
            assert!(
                (num - ana).abs() <= 1e-5 * (1.0 + ana.abs()) + 1e-6,
                "{score:?} {what}[{i}]: finite difference {num}, analytical {ana}"
            );
        };
        for i in 0..data.queries.len() {
            let num = numeric(data.queries[i], &|v| {
                let mut q = data.queries.clone();
                q[i] = v;
                loss(&data.layer, &data.outputs, &q)
            });
            agree("d_queries", i, num, grads.d_queries[i]);
        }
        for i in 0..data.outputs.len() {
            let num = numeric(data.outputs[i], &|v| {
                let mut o = data.outputs.clone();
                o[i] = v;
                loss(&data.layer, &o, &data.queries)
            });
            agree("d_encoder_outputs", i, num, grads.d_encoder_outputs[i]);
        }
        for i in 0..data.layer.params().len() {
            let num = numeric(data.layer.params()[i], &|v| {
                let mut layer = data.layer.clone();
                layer.params_mut()[i] = v;
                loss(&layer, &data.outputs, &data.queries)
            });
            agree("d_params", i, num, grads.d_params[i]);
        }
    }
}

/// Input feeding calls attention one decoder step at a time: a backward
/// gathered over those calls equals one over all steps at once.
#[test]
fn backward_accumulates_over_step_by_step_calls() {
    for score in Score::ALL {
        let case = Case {
            score,
            enc: 6,
            dec: if score == Score::Dot { 6 } else { 5 },
            attn: 7,
            seq_len: 5,
            batch: 4,
            steps: 3,
            seed: 5,
            isa: Isa::supported().len() - 1,
        };
        let data = case.data();
        let (t, n, e, d) = (case.seq_len, case.batch, case.enc, case.dec);
        let layer = &data.layer;
        let memory = layer.memory(&data.outputs, t, n, Some(&data.lens)).unwrap();
        let all = layer.attend(&memory, &data.queries).unwrap();
        let mut g_all = layer.start_backward(&memory).unwrap();
        let dq_all = layer
            .backward(
                &memory,
                &data.queries,
                &all,
                &data.d_context,
                None,
                &mut g_all,
            )
            .unwrap();
        let g_all = layer.finish_backward(&memory, g_all).unwrap();
        let mut g_steps = layer.start_backward(&memory).unwrap();
        let mut dq_steps = Vec::new();
        for step in 0..case.steps {
            let q = &data.queries[step * n * d..][..n * d];
            let one = layer.attend(&memory, q).unwrap();
            assert_eq!(
                one.context,
                all.context[step * n * e..][..n * e],
                "{score:?} step {step}"
            );
            let dc = &data.d_context[step * n * e..][..n * e];
            dq_steps.extend(
                layer
                    .backward(&memory, q, &one, dc, None, &mut g_steps)
                    .unwrap(),
            );
        }
        let g_steps = layer.finish_backward(&memory, g_steps).unwrap();
        let near = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()))
        };
        assert!(near(&dq_steps, &dq_all), "{score:?} d_queries");
        assert!(
            near(&g_steps.d_encoder_outputs, &g_all.d_encoder_outputs),
            "{score:?} d_enc"
        );
        assert!(
            near(&g_steps.d_params, &g_all.d_params),
            "{score:?} d_params"
        );
    }
}

#[test]
fn bad_shapes_and_sizes_are_errors() {
    use rnn::Error::{InvalidArgument, ShapeMismatch};
    assert!(matches!(
        Attention::new(Score::Dot, 3, 4, 0, 1),
        Err(InvalidArgument(_))
    ));
    assert!(matches!(
        Attention::new(Score::Additive, 3, 4, 0, 1),
        Err(InvalidArgument(_))
    ));
    assert!(matches!(
        Attention::new(Score::General, 0, 4, 0, 1),
        Err(InvalidArgument(_))
    ));
    let layer = Attention::new(Score::General, 3, 4, 0, 1).unwrap();
    assert_eq!(layer.params().len(), 12);
    assert!(matches!(
        layer.memory(&[0.0; 17], 3, 2, None),
        Err(ShapeMismatch { .. })
    ));
    assert!(matches!(
        layer.memory(&[0.0; 18], 3, 2, Some(&[3])),
        Err(ShapeMismatch { .. })
    ));
    assert!(matches!(
        layer.memory(&[0.0; 18], 3, 2, Some(&[4, 1])),
        Err(InvalidArgument(_))
    ));
    let memory = layer.memory(&[0.0; 18], 3, 2, Some(&[0, 2])).unwrap();
    assert!(matches!(
        layer.attend(&memory, &[0.0; 7]),
        Err(InvalidArgument(_))
    ));
    let out = layer.attend(&memory, &[1.0; 8]).unwrap();
    // All-equal scores over 2 positions: weights 1/2; item 0 has none.
    assert_eq!(out.weights, [0.0, 0.0, 0.0, 0.5, 0.5, 0.0]);
    let mut grads = layer.start_backward(&memory).unwrap();
    assert!(matches!(
        layer.backward(&memory, &[1.0; 8], &out, &[0.0; 5], None, &mut grads),
        Err(ShapeMismatch { .. })
    ));
    let other = Attention::new(Score::Additive, 3, 4, 2, 1).unwrap();
    assert!(
        other.attend(&memory, &[1.0; 8]).is_err(),
        "a memory of another key size"
    );
    // An empty batch.
    let err = layer.memory(&[], 3, 0, None).unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
}

/// NaN in, NaN out: a non-finite encoder output or decoder state spoils
/// only what it touches, and nothing panics.
#[test]
fn non_finite_inputs_give_nan_not_a_crash() {
    for score in Score::ALL {
        let layer = Attention::new(score, 3, 3, 2, 4).unwrap();
        let mut enc: Vec<f32> = (0..2 * 2 * 3).map(|i| (i as f32 * 0.3).sin()).collect();
        enc[3] = f32::NAN; // step 0, item 1
        let memory = layer.memory(&enc, 2, 2, None).unwrap();
        let mut states = vec![0.5f32; 2 * 3];
        let out = layer.attend(&memory, &states).unwrap();
        assert!(
            out.context[..3].iter().all(|c| c.is_finite()),
            "{score:?}: item 0 is untouched"
        );
        assert!(
            out.context[3..].iter().all(|c| c.is_nan()),
            "{score:?}: item 1 is NaN"
        );
        states[0] = f32::NAN;
        let out = layer.attend(&memory, &states).unwrap();
        assert!(
            out.weights[..2].iter().all(|w| w.is_nan()),
            "{score:?}: a NaN state"
        );
        // An infinite state: what IEEE arithmetic gives (the additive
        // score's tanh saturates), and no panic.
        let mut infinite = states.clone();
        infinite[0] = f32::INFINITY;
        assert!(layer.attend(&memory, &infinite).is_ok());
        let mut grads = layer.start_backward(&memory).unwrap();
        let dq = layer
            .backward(&memory, &states, &out, &[1.0; 6], None, &mut grads)
            .unwrap();
        assert_eq!(dq.len(), 6);
        assert!(layer.finish_backward(&memory, grads).is_ok());
    }
}

//! Every ISA path of the fast engine against the f64 reference, forward and
//! backward, on random shapes (proptest, fixed seed): sizes that do not fill
//! a vector, batch 1, hidden 1, one step, several batch blocks, every cell
//! and option, every direction mode, lengths and initial states.
//!
//! Tolerance: outputs and states within 2e-5 and gradients within 1e-4,
//! both relative to the largest magnitude of the reference value (f32
//! accumulation over these sizes stays well inside that).

mod common;

use common::{
    cell_variants, num_variants, random_batch, variant_index, widen, DIRECTIONS, LAYOUTS,
};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use rnn::rng::SplitMix64;
use rnn::{Config, Input, Isa, Model, OutputGrads};

fn close(what: &str, got: &[f32], want: &[f64], tol: f64) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len(), "{} length", what);
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - w).abs();
        prop_assert!(
            err <= tol * scale,
            "{}[{}]: {} vs {} (error {:e}, scale {})",
            what,
            i,
            g,
            w,
            err,
            scale
        );
    }
    Ok(())
}

#[derive(Clone, Debug)]
struct Case {
    variant: usize,
    direction: usize,
    layout: usize,
    layers: usize,
    input: usize,
    hidden: usize,
    proj: usize,
    seq_len: usize,
    batch: usize,
    seed: u64,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        (0..num_variants(), 0..4usize, 0..2usize, 1..=2usize),
        (1..=9usize, 1..=40usize, 1..=20usize),
        (1..=7usize, 1..=12usize, any::<u64>()),
    )
        .prop_map(
            |(
                (variant, direction, layout, layers),
                (input, hidden, proj),
                (seq_len, batch, seed),
            )| Case {
                variant,
                direction,
                layout,
                layers,
                input,
                hidden,
                proj,
                seq_len,
                batch,
                seed,
            },
        )
}

fn config(case: &Case) -> Config {
    let (name, builder) = cell_variants(case.input, case.hidden).swap_remove(case.variant);
    let builder = if name.contains("proj") || name == "lstm_all" {
        builder.proj_size(case.proj)
    } else {
        builder
    };
    builder
        .num_layers(case.layers)
        .direction(DIRECTIONS[case.direction])
        .layout(LAYOUTS[case.layout])
        .build()
        .unwrap()
}

fn check_isa(isa: Isa, case: &Case) -> Result<(), TestCaseError> {
    let config = config(case);
    let model = Model::random(config.clone(), case.seed)
        .with_isa(isa)
        .unwrap();
    let mut rng = SplitMix64::new(case.seed ^ 0x11);
    let b = random_batch(&mut rng, &config, case.seq_len, case.batch);
    let lstm = config.has_cell_state();
    let mut input = Input::new(&b.x, case.seq_len, case.batch)
        .with_seq_lens(&b.seq_lens)
        .with_h0(&b.h0);
    if lstm {
        input = input.with_c0(&b.c0);
    }
    let (out, trace) = model.forward_training(&input).unwrap();

    let params = widen(model.params());
    let (xw, h0w, c0w) = (widen(&b.x), widen(&b.h0), widen(&b.c0));
    let mut winput = Input::new(&xw[..], case.seq_len, case.batch)
        .with_seq_lens(&b.seq_lens)
        .with_h0(&h0w);
    if lstm {
        winput = winput.with_c0(&c0w);
    }
    let (want, wtrace) = rnn::reference::forward_training(&config, &params, &winput).unwrap();
    let name = format!("{isa:?} {}", cell_variants(1, 1)[case.variant].0);
    close(&format!("{name} y"), &out.y, &want.y, 2e-5)?;
    close(&format!("{name} h_n"), &out.h_n, &want.h_n, 2e-5)?;
    if let (Some(c), Some(wc)) = (&out.c_n, &want.c_n) {
        close(&format!("{name} c_n"), c, wc, 2e-5)?;
    }
    prop_assert_eq!(
        &model.forward_inference(&input).unwrap(),
        &out,
        "inference == training forward"
    );

    let dy = rng.uniform_vec(out.y.len(), -1.0, 1.0);
    let dh = rng.uniform_vec(out.h_n.len(), -1.0, 1.0);
    let dc = rng.uniform_vec(b.c0.len(), -1.0, 1.0);
    let mut grads = OutputGrads::new(&dy).with_dh_n(&dh);
    if lstm {
        grads = grads.with_dc_n(&dc);
    }
    let g = model.backward(&trace, &grads).unwrap();
    let (dyw, dhw, dcw) = (widen(&dy), widen(&dh), widen(&dc));
    let mut wgrads = OutputGrads::new(&dyw[..]).with_dh_n(&dhw);
    if lstm {
        wgrads = wgrads.with_dc_n(&dcw);
    }
    let wg = rnn::reference::backward(&config, &params, &wtrace, &wgrads).unwrap();
    close(&format!("{name} dx"), &g.dx, &wg.dx, 1e-4)?;
    close(&format!("{name} dh0"), &g.dh0, &wg.dh0, 1e-4)?;
    if let (Some(d), Some(wd)) = (&g.dc0, &wg.dc0) {
        close(&format!("{name} dc0"), d, wd, 1e-4)?;
    }
    close(&format!("{name} dparams"), &g.dparams, &wg.dparams, 1e-4)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        rng_seed: RngSeed::Fixed(0x0e9a),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_isa_matches_the_reference(case in cases()) {
        for isa in Isa::supported() {
            check_isa(isa, &case)?;
        }
    }
}

/// Fixed corner shapes on every ISA: hidden 1, batch 1, one step, and sizes
/// one below and above the vector widths.
#[test]
fn corner_shapes_match_the_reference() {
    for (hidden, batch, seq_len) in [
        (1, 1, 1),
        (7, 1, 3),
        (8, 2, 2),
        (9, 3, 1),
        (15, 1, 2),
        (16, 5, 2),
        (17, 4, 3),
        (33, 9, 2),
    ] {
        for variant in 0..num_variants() {
            for direction in 0..4 {
                let case = Case {
                    variant,
                    direction,
                    layout: 0,
                    layers: 2,
                    input: 3,
                    hidden,
                    proj: 5,
                    seq_len,
                    batch,
                    seed: 7,
                };
                for isa in Isa::supported() {
                    check_isa(isa, &case).unwrap();
                }
            }
        }
    }
}

/// The input projection runs over blocks of rows in parallel: a call with
/// several blocks and a ragged last one, and an input width that is not a
/// multiple of anything, must match too.
#[test]
fn input_projection_over_several_row_blocks_matches_the_reference() {
    for name in ["lstm_peephole", "gru_linear_before_reset", "rnn_gate_clip"] {
        let case = Case {
            variant: variant_index(name),
            direction: 2,
            layout: 1,
            layers: 2,
            input: 37,
            hidden: 20,
            proj: 0,
            seq_len: 13,
            batch: 11,
            seed: 5,
        };
        for isa in Isa::supported() {
            check_isa(isa, &case).unwrap();
        }
    }
}

#[test]
fn the_selected_isa_is_supported() {
    let isa = Isa::selected().unwrap();
    assert!(isa.is_supported());
    println!("selected ISA: {isa:?}; supported: {:?}", Isa::supported());
}

/// On several threads a layer runs as a thread team: the two directions at
/// once, each step's panels split between members, batch blocks for the
/// members left over; every such split must equal the reference too, on
/// every ISA. Sizes are large enough for every step (and the LSTM
/// projection) to split.
#[test]
fn steps_split_across_threads_match_the_reference() {
    for (threads, batches) in [(2, &[1, 2][..]), (4, &[1, 4, 8][..])] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            for (name, hidden) in [
                ("lstm", 384),
                ("lstm_peephole", 384),
                ("lstm_onnx_all", 384),
                ("lstm_all", 384),
                ("gru_reset_before", 512),
                ("gru_linear_before_reset_gate_clip", 512),
                ("rnn_tanh", 768),
                ("rnn_gate_clip", 768),
            ] {
                for &batch in batches {
                    let case = Case {
                        variant: variant_index(name),
                        direction: 2,
                        layout: 0,
                        layers: 1,
                        input: 5,
                        hidden,
                        // The projection's outputs split too.
                        proj: if name == "lstm_all" { 200 } else { 0 },
                        seq_len: 3,
                        batch,
                        seed: 3,
                    };
                    for isa in Isa::supported() {
                        check_isa(isa, &case).unwrap();
                    }
                }
            }
        });
    }
}

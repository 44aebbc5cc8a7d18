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
    cell_variants, matches_reference, num_variants, random_batch, variant_index, DIRECTIONS,
    LAYOUTS,
};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use rnn::rng::SplitMix64;
use rnn::{Config, Isa, Model};

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
    let name = format!("{isa:?} {}", cell_variants(1, 1)[case.variant].0);
    matches_reference(&model, &b, case.seq_len, case.batch, &mut rng, &name).map(|_| ())
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
    // Under qemu, 72 s with the portable path, which the native run covers.
    let isas = common::isas_to_cover();
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
                    for &isa in &isas {
                        check_isa(isa, &case).unwrap();
                    }
                }
            }
        });
    }
}

//! Streaming (`Model::stream`): step by step equals one whole call, bit for
//! bit, for every cell variant on every ISA, with per-item lengths (items
//! sitting steps out), initial states, per-item resets; reversed
//! directions are refused.

mod common;

use common::{cell_variants, random_batch};
use rnn::rng::SplitMix64;
use rnn::{CellKind, Config, Direction, EmptySequenceState, Input, Isa, Model};

/// Steps `x [T, N, I]` through a stream, `active` per step when given;
/// returns `y [T, N, out]`.
fn streamed(
    stream: &mut rnn::Stream<'_>,
    x: &[f32],
    t_len: usize,
    lens: Option<&[usize]>,
) -> Vec<f32> {
    let per_step = x.len() / t_len;
    let mut y = Vec::new();
    for (t, step) in x.chunks_exact(per_step).enumerate() {
        let out = match lens {
            Some(lens) => {
                let active: Vec<bool> = lens.iter().map(|&l| t < l).collect();
                stream.step_items(step, &active).unwrap()
            }
            None => stream.step(step).unwrap(),
        };
        y.extend_from_slice(out);
    }
    y
}

#[test]
fn a_stream_equals_one_whole_call_for_every_variant_on_every_isa() {
    common::split_small_steps();
    let (t_len, batch) = (6, 3);
    for isa in Isa::supported() {
        for (i, (name, builder)) in cell_variants(5, 7).into_iter().enumerate() {
            for layers in [1, 2] {
                let config = builder.clone().num_layers(layers).build().unwrap();
                let model = Model::random(config.clone(), 40 + i as u64)
                    .with_isa(isa)
                    .unwrap();
                let mut rng = SplitMix64::new(7 + i as u64);
                let b = random_batch(&mut rng, &config, t_len, batch);
                let what = format!("{isa:?} {name} ({layers} layers)");

                // Whole call from h0 (c0), against the stream from the same state.
                let mut input = Input::new(&b.x, t_len, batch).with_h0(&b.h0);
                if config.has_cell_state() {
                    input = input.with_c0(&b.c0);
                }
                let whole = model.forward_inference(&input).unwrap();
                let mut stream = model.stream(batch).unwrap();
                let c0 = config.has_cell_state().then_some(&b.c0[..]);
                stream.set_state(&b.h0, c0).unwrap();
                assert_eq!(
                    streamed(&mut stream, &b.x, t_len, None),
                    whole.y,
                    "{what}: y"
                );
                assert_eq!(stream.h(), &whole.h_n[..], "{what}: h");
                assert_eq!(stream.c(), whole.c_n.as_deref().unwrap_or(&[]), "{what}: c");

                // Per-item lengths: an item past its length sits steps out.
                let lens = [t_len, 2, 0];
                let whole = model
                    .forward_inference(&input.with_seq_lens(&lens))
                    .unwrap();
                stream.set_state(&b.h0, c0).unwrap();
                let y = streamed(&mut stream, &b.x, t_len, Some(&lens));
                assert_eq!(y, whole.y, "{what}: y with lengths");
                assert_eq!(stream.h(), &whole.h_n[..], "{what}: h with lengths");
            }
        }
    }
}

/// Under onnxruntime's empty-item option a whole call zeroes the state of
/// an item of length 0; an item sitting steps out of a stream keeps its
/// state, and items that ran match the whole call.
#[test]
fn items_sitting_out_keep_their_state_under_the_zeros_option() {
    let config = Config::builder(CellKind::Gru, 2, 5)
        .empty_sequence_state(EmptySequenceState::Zeros)
        .build()
        .unwrap();
    let model = Model::random(config.clone(), 3);
    let b = random_batch(&mut SplitMix64::new(4), &config, 4, 2);
    let mut stream = model.stream(2).unwrap();
    stream.set_state(&b.h0, None).unwrap();
    stream.step_items(&b.x[..4], &[true, false]).unwrap();
    assert_eq!(stream.h()[5..], b.h0[5..], "item 1 sat the step out");
    let lens = [4, 3];
    let input = Input::new(&b.x, 4, 2).with_h0(&b.h0).with_seq_lens(&lens);
    let whole = model.forward_inference(&input).unwrap();
    stream.set_state(&b.h0, None).unwrap();
    let y = streamed(&mut stream, &b.x, 4, Some(&lens));
    assert_eq!(y, whole.y);
    assert_eq!(stream.h(), &whole.h_n[..]);
}

#[test]
fn a_reset_item_starts_a_new_sequence() {
    let config = Config::builder(CellKind::Lstm, 3, 6)
        .num_layers(2)
        .build()
        .unwrap();
    let model = Model::random(config.clone(), 8);
    let (t_len, batch) = (5, 2);
    let b = random_batch(&mut SplitMix64::new(9), &config, t_len, batch);
    let mut stream = model.stream(batch).unwrap();
    streamed(&mut stream, &b.x, t_len, None);
    stream.reset_item(0).unwrap();
    let before = stream.h().to_vec();
    // Item 0 again from zero: its outputs are those of a fresh call.
    let y = streamed(&mut stream, &b.x, t_len, None);
    let fresh = model
        .forward_inference(&Input::new(&b.x, t_len, batch))
        .unwrap();
    let out = config.output_size();
    for t in 0..t_len {
        let row = (t * batch) * out;
        assert_eq!(
            y[row..row + out],
            fresh.y[row..row + out],
            "item 0, step {t}"
        );
    }
    // Item 1 carried on from where it was (so differs from the fresh call).
    assert_ne!(before[6..12], [0.0; 6], "item 1 kept its state");
    assert_ne!(y[out..2 * out], fresh.y[out..2 * out]);
    assert!(stream.reset_item(2).is_err());
    stream.reset();
    assert!(stream.h().iter().chain(stream.c()).all(|&v| v == 0.0));
    // After a reset the stream is a fresh call again (its state kept
    // between steps included).
    assert_eq!(streamed(&mut stream, &b.x, t_len, None), fresh.y);
    assert_eq!(stream.h(), &fresh.h_n[..]);
}

#[test]
fn reversed_directions_and_bad_sizes_are_refused() {
    for direction in [
        Direction::Reverse,
        Direction::BidirectionalConcat,
        Direction::BidirectionalSum,
    ] {
        let config = Config::builder(CellKind::Rnn, 2, 3)
            .direction(direction)
            .build()
            .unwrap();
        let msg = Model::zeros(config).stream(1).unwrap_err().to_string();
        assert!(msg.contains("cannot stream"), "{msg}");
    }
    let model = Model::zeros(Config::builder(CellKind::Rnn, 2, 3).build().unwrap());
    assert!(model.stream(0).is_err());
    let mut stream = model.stream(2).unwrap();
    assert_eq!(stream.batch(), 2);
    assert!(stream.step(&[0.0; 3]).is_err(), "x must be [N, I]");
    assert!(stream.step_items(&[0.0; 4], &[true]).is_err());
    assert!(stream.set_state(&[0.0; 5], None).is_err());
    assert!(stream.step(&[0.0; 4]).is_ok());
}

/// A stream whose layers the engine would split runs its steps on helper
/// threads of its own (trying them against the caller alone on its first
/// steps): the same bits as a whole call on one thread, on pools of 2 and
/// 3 threads, through the trial and after it, with and without lengths.
#[test]
fn a_stream_on_helper_threads_equals_one_whole_call_on_one_thread() {
    common::split_small_steps();
    let (t_len, steps_per_trial) = (24, 2 * 9);
    assert!(t_len > steps_per_trial, "the steps go past the trial");
    let pool = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    };
    let one = pool(1);
    for (i, (name, builder)) in cell_variants(20, 96).into_iter().enumerate() {
        let config = builder.num_layers(2).build().unwrap();
        let model = Model::random(config.clone(), 60 + i as u64);
        for batch in [1, 3] {
            let mut rng = SplitMix64::new(70 + i as u64);
            let b = random_batch(&mut rng, &config, t_len, batch);
            let lens: Vec<usize> = (0..batch).map(|item| t_len - 5 * item).collect();
            let input = Input::new(&b.x, t_len, batch).with_seq_lens(&lens);
            let whole = one.install(|| model.forward_inference(&input)).unwrap();
            for threads in [2, 3] {
                let what = format!("{name}, batch {batch}, {threads} threads");
                let (y, h) = pool(threads).install(|| {
                    let mut stream = model.stream(batch).unwrap();
                    let y = streamed(&mut stream, &b.x, t_len, Some(&lens));
                    (y, stream.h().to_vec())
                });
                assert_eq!(y, whole.y, "{what}: y");
                assert_eq!(h, whole.h_n, "{what}: h");
            }
        }
    }
}

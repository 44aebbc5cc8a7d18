//! Structural properties of the forward pass, on random shapes and options
//! (proptest, fixed seed, bounded case counts), through the public API:
//!
//! * a bidirectional layer equals a forward layer and a reversed layer;
//! * a stack of layers equals single-layer models chained;
//! * lengths all equal to T equal no lengths;
//! * one call of T steps equals T calls of one step with carried state;
//! * zero-length items return h0 / c0 and zero outputs;
//! * batch-first equals time-major with x and y transposed;
//! * each item of a batch equals that item run alone;
//! * forward training returns exactly what forward inference does.

mod common;

use common::{assert_close, cell_variants, num_variants, random_batch, Batch, DIRECTIONS};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use rnn::rng::SplitMix64;
use rnn::{Coded, Config, Direction, Input, Layout, Model, Output, OutputGrads, ParamKind};

/// Differences come only from rounding to f32 at different points.
const TOL: f64 = 2e-5;

fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(0x6c69_6272_6e6e),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

#[derive(Clone, Debug)]
struct Case {
    variant: usize,
    direction: Direction,
    layers: usize,
    input: usize,
    hidden: usize,
    seq_len: usize,
    batch: usize,
    seed: u64,
}

impl Case {
    fn name(&self) -> &'static str {
        cell_variants(1, 1)[self.variant].0
    }
    fn config(&self) -> Config {
        self.config_with(self.direction, self.layers, self.input)
    }
    fn config_with(&self, direction: Direction, layers: usize, input: usize) -> Config {
        cell_variants(input, self.hidden)[self.variant]
            .1
            .clone()
            .direction(direction)
            .num_layers(layers)
            .build()
            .unwrap()
    }
    fn model(&self) -> Model {
        Model::random(self.config(), self.seed)
    }
    fn batch(&self, config: &Config) -> Batch {
        random_batch(
            &mut SplitMix64::new(self.seed ^ 0xba7c),
            config,
            self.seq_len,
            self.batch,
        )
    }
}

fn cases() -> impl Strategy<Value = Case> {
    (
        0..num_variants(),
        0..4usize,
        1..=3usize,
        1..=5usize,
        1..=6usize,
        1..=6usize,
        1..=4usize,
        any::<u64>(),
    )
        .prop_map(
            |(variant, d, layers, input, hidden, seq_len, batch, seed)| Case {
                variant,
                direction: DIRECTIONS[d],
                layers,
                input,
                hidden,
                seq_len,
                batch,
                seed,
            },
        )
}

/// Runs `model` on `b`, with lengths if given and with `b`'s initial states if `with_states`.
fn run(
    model: &Model,
    b: &Batch,
    seq_len: usize,
    lens: Option<&[usize]>,
    with_states: bool,
) -> Output {
    let n = b.x.len() / (seq_len * model.config().input_size()).max(1);
    let mut input = Input::new(&b.x, seq_len, n);
    if let Some(lens) = lens {
        input = input.with_seq_lens(lens);
    }
    if with_states {
        input = input.with_h0(&b.h0);
        if model.config().has_cell_state() {
            input = input.with_c0(&b.c0);
        }
    }
    model.forward_inference(&input).unwrap()
}

/// Copies one (layer, dir) block of `from` into (layer 0, dir 0) of `to`.
fn copy_block(from: &Model, layer: usize, dir: usize, to: &mut Model) {
    for &kind in ParamKind::ALL {
        if let Ok(src) = from.param(layer, dir, kind) {
            to.param_mut(0, 0, kind).unwrap().copy_from_slice(src);
        }
    }
}

/// Slice `[ld]` of a state tensor `[L*D, N, size]`.
fn state_slice(v: &[f32], ld: usize, n: usize, size: usize) -> &[f32] {
    &v[ld * n * size..(ld + 1) * n * size]
}

proptest! {
    #![proptest_config(proptest_config(128))]

    #[test]
    fn bidirectional_is_forward_plus_reverse(case in cases()) {
        for direction in [Direction::BidirectionalConcat, Direction::BidirectionalSum] {
            let bi = Model::random(case.config_with(direction, 1, case.input), case.seed);
            let b = case.batch(bi.config());
            let out = run(&bi, &b, case.seq_len, Some(&b.seq_lens), true);
            let (n, hs, cs) = (case.batch, bi.config().state_size(), bi.config().hidden_size());
            let mut halves = Vec::new();
            for (dir, one_way) in [Direction::Forward, Direction::Reverse].into_iter().enumerate() {
                let mut m = Model::zeros(case.config_with(one_way, 1, case.input));
                copy_block(&bi, 0, dir, &mut m);
                let mut part = Batch { x: b.x.clone(), seq_lens: b.seq_lens.clone(), h0: state_slice(&b.h0, dir, n, hs).to_vec(), c0: Vec::new() };
                if m.config().has_cell_state() {
                    part.c0 = state_slice(&b.c0, dir, n, cs).to_vec();
                }
                let o = run(&m, &part, case.seq_len, Some(&b.seq_lens), true);
                assert_close("h_n half", state_slice(&out.h_n, dir, n, hs), &o.h_n, TOL);
                if let Some(c_n) = &out.c_n {
                    assert_close("c_n half", state_slice(c_n, dir, n, cs), o.c_n.as_ref().unwrap(), TOL);
                }
                halves.push(o.y);
            }
            let want: Vec<f32> = match direction {
                Direction::BidirectionalConcat => halves[0].chunks(hs).zip(halves[1].chunks(hs)).flat_map(|(f, r)| f.iter().chain(r).copied()).collect(),
                _ => halves[0].iter().zip(&halves[1]).map(|(f, r)| f + r).collect(),
            };
            assert_close(&format!("{} {direction:?} y", case.name()), &out.y, &want, TOL);
        }
    }

    #[test]
    fn stacked_layers_are_chained_single_layers(case in cases()) {
        let model = case.model();
        let config = model.config().clone();
        let b = case.batch(&config);
        let out = run(&model, &b, case.seq_len, Some(&b.seq_lens), true);
        let (n, d, hs, cs) = (case.batch, config.num_directions(), config.state_size(), config.hidden_size());
        let mut x = b.x.clone();
        for layer in 0..case.layers {
            let mut m = Model::zeros(case.config_with(case.direction, 1, config.layer_input_size(layer)));
            for dir in 0..d {
                // A block's layout depends only on its input size, which matches.
                let src = &model.params()[config.block_range(layer, dir).unwrap()];
                let dst = m.config().block_range(0, dir).unwrap();
                m.params_mut()[dst].copy_from_slice(src);
            }
            let states = layer * d * n..(layer + 1) * d * n;
            let part = Batch {
                x,
                seq_lens: b.seq_lens.clone(),
                h0: b.h0[states.start * hs..states.end * hs].to_vec(),
                c0: if config.has_cell_state() { b.c0[states.start * cs..states.end * cs].to_vec() } else { Vec::new() },
            };
            let o = run(&m, &part, case.seq_len, Some(&b.seq_lens), true);
            assert_close("h_n of layer", &out.h_n[states.start * hs..states.end * hs], &o.h_n, TOL);
            x = o.y;
        }
        assert_close(&format!("{} y", case.name()), &out.y, &x, TOL);
    }

    #[test]
    fn full_lengths_equal_no_lengths(case in cases()) {
        let model = case.model();
        let b = case.batch(model.config());
        let full = vec![case.seq_len; case.batch];
        prop_assert_eq!(run(&model, &b, case.seq_len, Some(&full), true), run(&model, &b, case.seq_len, None, true));
    }

    #[test]
    fn one_call_equals_steps_with_carried_state(case in cases()) {
        let config = case.config_with(Direction::Forward, case.layers, case.input);
        let model = Model::random(config.clone(), case.seed);
        let b = case.batch(&config);
        let whole = run(&model, &b, case.seq_len, Some(&b.seq_lens), true);
        let (step_x, step_y) = (case.batch * case.input, case.batch * config.output_size());
        let mut state = Batch { x: Vec::new(), seq_lens: Vec::new(), h0: b.h0.clone(), c0: b.c0.clone() };
        for t in 0..case.seq_len {
            state.x = b.x[t * step_x..(t + 1) * step_x].to_vec();
            // An item whose sequence has ended runs zero steps from here on.
            let lens: Vec<usize> = b.seq_lens.iter().map(|&l| usize::from(t < l)).collect();
            let o = run(&model, &state, 1, Some(&lens), true);
            assert_close(&format!("{} y at t={t}", case.name()), &whole.y[t * step_y..(t + 1) * step_y], &o.y, TOL);
            state.h0 = o.h_n;
            if let Some(c) = o.c_n {
                state.c0 = c;
            }
        }
        assert_close("h_n", &whole.h_n, &state.h0, TOL);
        if let Some(c_n) = &whole.c_n {
            assert_close("c_n", c_n, &state.c0, TOL);
        }
    }

    #[test]
    fn zero_length_items_return_initial_state(case in cases()) {
        let model = case.model();
        let config = model.config();
        let b = case.batch(config);
        let out = run(&model, &b, case.seq_len, Some(&b.seq_lens), true);
        let (n, hs, cs, width) = (case.batch, config.state_size(), config.hidden_size(), config.output_size());
        for item in (0..n).filter(|&i| b.seq_lens[i] == 0) {
            for ld in 0..case.layers * config.num_directions() {
                let h = (ld * n + item) * hs..(ld * n + item + 1) * hs;
                prop_assert_eq!(&out.h_n[h.clone()], &b.h0[h]);
                if let Some(c_n) = &out.c_n {
                    let c = (ld * n + item) * cs..(ld * n + item + 1) * cs;
                    prop_assert_eq!(&c_n[c.clone()], &b.c0[c]);
                }
            }
        }
        // Outputs past each item's length are exactly zero.
        for t in 0..case.seq_len {
            for item in (0..n).filter(|&i| t >= b.seq_lens[i]) {
                let row = (t * n + item) * width;
                prop_assert!(out.y[row..row + width].iter().all(|&v| v == 0.0));
            }
        }
    }

    #[test]
    fn batch_first_is_transposed_time_major(case in cases()) {
        let tm = case.model();
        let bf_config = cell_variants(case.input, case.hidden)[case.variant].1.clone()
            .direction(case.direction).num_layers(case.layers).layout(Layout::BatchFirst).build().unwrap();
        let bf = Model::from_params(bf_config, tm.params().to_vec()).unwrap();
        let b = case.batch(tm.config());
        let (t_len, n) = (case.seq_len, case.batch);
        let transpose = |v: &[f32], a: usize, c: usize, f: usize| -> Vec<f32> {
            (0..c).flat_map(|j| (0..a).flat_map(move |i| (0..f).map(move |k| (i * c + j) * f + k))).map(|i| v[i]).collect()
        };
        let bb = Batch { x: transpose(&b.x, t_len, n, case.input), seq_lens: b.seq_lens.clone(), h0: b.h0.clone(), c0: b.c0.clone() };
        let out_tm = run(&tm, &b, t_len, Some(&b.seq_lens), true);
        let out_bf = run(&bf, &bb, t_len, Some(&bb.seq_lens), true);
        prop_assert_eq!(&out_bf.y, &transpose(&out_tm.y, t_len, n, tm.config().output_size()));
        prop_assert_eq!(&out_bf.h_n, &out_tm.h_n);
    }

    #[test]
    fn items_are_independent(case in cases()) {
        let model = case.model();
        let config = model.config();
        let b = case.batch(config);
        let out = run(&model, &b, case.seq_len, Some(&b.seq_lens), true);
        let (t_len, n, i_size, width) = (case.seq_len, case.batch, case.input, config.output_size());
        let ld = case.layers * config.num_directions();
        let item = (case.seed % n as u64) as usize;
        let pick = |v: &[f32], rows: usize, size: usize| -> Vec<f32> {
            (0..rows).flat_map(|r| v[(r * n + item) * size..(r * n + item + 1) * size].to_vec()).collect()
        };
        let alone = Batch {
            x: pick(&b.x, t_len, i_size),
            seq_lens: vec![b.seq_lens[item]],
            h0: pick(&b.h0, ld, config.state_size()),
            c0: if config.has_cell_state() { pick(&b.c0, ld, config.hidden_size()) } else { Vec::new() },
        };
        let o = run(&model, &alone, t_len, Some(&alone.seq_lens), true);
        assert_close("y of one item", &pick(&out.y, t_len, width), &o.y, TOL);
        assert_close("h_n of one item", &pick(&out.h_n, ld, config.state_size()), &o.h_n, TOL);
    }

    #[test]
    fn training_forward_equals_inference(case in cases()) {
        let model = case.model();
        let b = case.batch(model.config());
        let mut input = Input::new(&b.x, case.seq_len, case.batch).with_seq_lens(&b.seq_lens).with_h0(&b.h0);
        if model.config().has_cell_state() {
            input = input.with_c0(&b.c0);
        }
        let (out, _trace) = model.forward_training(&input).unwrap();
        prop_assert_eq!(out, model.forward_inference(&input).unwrap());
    }

    /// The `_into` calls write exactly the owned calls' results into buffers
    /// that held garbage (NaN), in both layouts, and their trace backs up
    /// the same gradients.
    #[test]
    fn into_buffers_equal_owned_outputs(case in cases()) {
        for layout in [Layout::TimeMajor, Layout::BatchFirst] {
            let config = cell_variants(case.input, case.hidden)[case.variant]
                .1
                .clone()
                .direction(case.direction)
                .num_layers(case.layers)
                .layout(layout)
                .build()
                .unwrap();
            let model = Model::random(config.clone(), case.seed);
            let b = case.batch(&config);
            let mut input = Input::new(&b.x, case.seq_len, case.batch).with_seq_lens(&b.seq_lens).with_h0(&b.h0);
            if config.has_cell_state() {
                input = input.with_c0(&b.c0);
            }
            let want = model.forward_inference(&input).unwrap();
            let s = rnn::Shapes::of_input(&config, &input).unwrap();
            let (mut y, mut h_n, mut c_n) = (vec![f32::NAN; s.y], vec![f32::NAN; s.h], vec![f32::NAN; s.c]);
            let c_out = config.has_cell_state().then_some(&mut c_n[..]);
            model.forward_inference_into(&input, &mut y, &mut h_n, c_out).unwrap();
            prop_assert_eq!(&y, &want.y);
            prop_assert_eq!(&h_n, &want.h_n);
            prop_assert_eq!(&c_n, &want.c_n.clone().unwrap_or_default());

            y.fill(f32::NAN);
            let trace = model.forward_training_into(&input, &mut y, &mut h_n, None).unwrap();
            prop_assert_eq!(&y, &want.y);
            let (_, owned_trace) = model.forward_training(&input).unwrap();
            let dy = vec![0.25; s.y];
            let grads = OutputGrads::new(&dy);
            prop_assert_eq!(
                model.backward(&trace, &grads).unwrap(),
                model.backward(&owned_trace, &grads).unwrap()
            );
        }
    }
}

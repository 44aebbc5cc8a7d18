//! Same bits for any thread count, and no hang or mixed results when calls
//! arrive at once from many threads.
//!
//! * Outputs, final states and every gradient are bitwise identical on
//!   pools of 1, 2, 3, 4 and 16 threads and on librnn's own pool (proptest
//!   over cells, options, directions, layers and shapes, sized so that
//!   steps split across the team and directions run at the same time, with
//!   the split's bound set to 8k multiply-adds a part on every machine:
//!   `common::split_small_steps`).
//! * Eight threads sharing one model, each looping inference and training
//!   calls on small batches, get exactly the single-threaded results, on a
//!   2-thread pool and on librnn's pool.
//! * Calls made from inside `rayon::scope` on the caller's own pool, while
//!   its other workers are busy, finish with the same results.

mod common;

use common::{cell_variants, num_variants, random_batch, Batch, DIRECTIONS};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use rnn::rng::SplitMix64;
use rnn::{Config, Gradients, Input, Model, Output, OutputGrads};

/// Everything a training step returns, to compare bit for bit.
#[derive(Debug, PartialEq)]
struct Results {
    inference: Output,
    training: Output,
    grads: Gradients,
}

#[derive(Clone, Debug)]
struct Case {
    variant: usize,
    direction: usize,
    layers: usize,
    input: usize,
    hidden: usize,
    seq_len: usize,
    batch: usize,
    seed: u64,
}

impl Case {
    fn config(&self) -> Config {
        cell_variants(self.input, self.hidden)[self.variant]
            .1
            .clone()
            .direction(DIRECTIONS[self.direction])
            .num_layers(self.layers)
            .build()
            .unwrap()
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Compares two results bit for bit (NaN included), naming the first field
/// that differs.
fn same_bits(a: &Results, b: &Results) -> Result<(), String> {
    let fields: [(&str, &[f32], &[f32]); 9] = [
        ("y", &a.inference.y, &b.inference.y),
        ("h_n", &a.inference.h_n, &b.inference.h_n),
        (
            "c_n",
            a.inference.c_n.as_deref().unwrap_or(&[]),
            b.inference.c_n.as_deref().unwrap_or(&[]),
        ),
        ("training y", &a.training.y, &b.training.y),
        ("training h_n", &a.training.h_n, &b.training.h_n),
        ("dx", &a.grads.dx, &b.grads.dx),
        ("dh0", &a.grads.dh0, &b.grads.dh0),
        (
            "dc0",
            a.grads.dc0.as_deref().unwrap_or(&[]),
            b.grads.dc0.as_deref().unwrap_or(&[]),
        ),
        ("dparams", &a.grads.dparams, &b.grads.dparams),
    ];
    for (name, x, y) in fields {
        if bits(x) != bits(y) {
            let at = bits(x).iter().zip(bits(y)).position(|(p, q)| *p != q);
            return Err(format!("{name} differs (first at {at:?})"));
        }
    }
    Ok(())
}

fn run(model: &Model, b: &Batch, seq_len: usize, batch: usize, dy_seed: u64) -> Results {
    let mut input = Input::new(&b.x, seq_len, batch)
        .with_seq_lens(&b.seq_lens)
        .with_h0(&b.h0);
    if model.config().has_cell_state() {
        input = input.with_c0(&b.c0);
    }
    let inference = model.forward_inference(&input).unwrap();
    let (training, trace) = model.forward_training(&input).unwrap();
    let mut rng = SplitMix64::new(dy_seed);
    let dy = rng.uniform_vec(training.y.len(), -1.0, 1.0);
    let dh_n = rng.uniform_vec(training.h_n.len(), -1.0, 1.0);
    let dc_n = rng.uniform_vec(training.c_n.as_ref().map_or(0, Vec::len), -1.0, 1.0);
    let mut grads = OutputGrads::new(&dy).with_dh_n(&dh_n);
    if model.config().has_cell_state() {
        grads = grads.with_dc_n(&dc_n);
    }
    let grads = model.backward(&trace, &grads).unwrap();
    Results {
        inference,
        training,
        grads,
    }
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

fn check_case(case: &Case, pools: &[(usize, rayon::ThreadPool)]) -> Result<(), String> {
    let config = case.config();
    let model = Model::random(config.clone(), case.seed);
    let b = random_batch(
        &mut SplitMix64::new(case.seed ^ 0xd37e),
        &config,
        case.seq_len,
        case.batch,
    );
    let go = || run(&model, &b, case.seq_len, case.batch, case.seed);
    let one = pools[0].1.install(go);
    for (threads, pool) in &pools[1..] {
        same_bits(&one, &pool.install(go)).map_err(|e| format!("{threads} threads: {e}"))?;
    }
    // From this thread, in no pool: inference runs in place (this thread
    // its teams' first member, librnn's workers the others), training on
    // librnn's pool.
    same_bits(&one, &go()).map_err(|e| format!("librnn's pool: {e}"))
}

fn cases() -> impl Strategy<Value = Case> {
    (
        0..num_variants(),
        0..DIRECTIONS.len(),
        1..=2usize,
        1..=9usize,
        // Hidden sizes whose steps split in two to four (and across ISAs'
        // panel widths, odd ones that fill no vector).
        prop_oneof![24..=40usize, 60..=130usize],
        1..=5usize,
        1..=9usize,
        any::<u64>(),
    )
        .prop_map(
            |(variant, direction, layers, input, hidden, seq_len, batch, seed)| Case {
                variant,
                direction,
                layers,
                input,
                hidden,
                seq_len,
                batch,
                seed,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        rng_seed: RngSeed::Fixed(0x7465_616d),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn results_are_bitwise_identical_for_any_thread_count(case in cases()) {
        common::split_small_steps();
        let pools: Vec<_> = [1, 2, 3, 4, 16].into_iter().map(|t| (t, pool(t))).collect();
        prop_assert!(check_case(&case, &pools).is_ok(), "{:?}: {:?}", case, check_case(&case, &pools));
    }
}

/// Reduced-precision inference (bf16, int8) on the default ISA, AMX tiles
/// included where the CPU has them: batches of one (bf16 widens there), a
/// few rows, and more rows than a tile holds (split into groups and, on
/// threads, into row blocks), sizes that leave a short last k block.
#[test]
fn reduced_precision_inference_is_bitwise_identical_for_any_thread_count() {
    common::split_small_steps();
    let pools: Vec<_> = [1, 2, 3, 4].into_iter().map(|t| (t, pool(t))).collect();
    for precision in [rnn::Precision::Bf16, rnn::Precision::Int8] {
        for variant in 0..num_variants() {
            for (batch, direction) in [(1, 0), (3, 1), (20, 2), (40, 0)] {
                let config: Config = cell_variants(37, 100)[variant]
                    .1
                    .clone()
                    .direction(DIRECTIONS[direction])
                    .num_layers(2)
                    .build()
                    .unwrap();
                let model =
                    Model::random(config.clone(), 5 + variant as u64).with_precision(precision);
                let b = random_batch(&mut SplitMix64::new(batch as u64), &config, 3, batch);
                let mut input = Input::new(&b.x, 3, batch)
                    .with_seq_lens(&b.seq_lens)
                    .with_h0(&b.h0);
                if config.has_cell_state() {
                    input = input.with_c0(&b.c0);
                }
                let go = || model.forward_inference(&input).unwrap();
                let one = pools[0].1.install(go);
                let name = cell_variants(1, 1)[variant].0;
                for (threads, pool) in &pools[1..] {
                    let other = pool.install(go);
                    assert!(
                        bits(&one.y) == bits(&other.y) && bits(&one.h_n) == bits(&other.h_n),
                        "{name} {precision:?} batch {batch} on {}: {threads} threads differ",
                        model.isa().unwrap().name()
                    );
                }
                assert_eq!(
                    bits(&one.y),
                    bits(&go().y),
                    "{name} {precision:?} batch {batch}"
                );
            }
        }
    }
}

/// Every cell variant once, at a size every step of which splits.
#[test]
fn every_variant_is_bitwise_identical_on_two_threads() {
    common::split_small_steps();
    let pools = vec![(1, pool(1)), (2, pool(2))];
    for variant in 0..num_variants() {
        for direction in 0..DIRECTIONS.len() {
            let case = Case {
                variant,
                direction,
                layers: 2,
                input: 5,
                hidden: 100,
                seq_len: 4,
                batch: 3,
                seed: 11 + variant as u64,
            };
            if let Err(e) = check_case(&case, &pools) {
                panic!("{}: {case:?}: {e}", cell_variants(1, 1)[variant].0);
            }
        }
    }
}

/// One layer of steps too small to split, whose input projection is worth
/// the other threads: on two threads a second member projects it ahead of
/// the steps, on three and four the pool forks it before them, on one the
/// layer projects it itself. Every cell variant, items of random lengths.
#[test]
fn projections_ahead_and_forked_are_bitwise_identical() {
    common::split_small_steps();
    let pools: Vec<_> = [1, 2, 3, 4].into_iter().map(|t| (t, pool(t))).collect();
    for variant in 0..num_variants() {
        let case = Case {
            variant,
            direction: 0,
            layers: 1,
            input: 60,
            hidden: 40,
            seq_len: 500,
            batch: 2,
            seed: 31 + variant as u64,
        };
        if let Err(e) = check_case(&case, &pools) {
            panic!("{}: {case:?}: {e}", cell_variants(1, 1)[variant].0);
        }
    }
}

/// Batches large enough to run as one block per thread (16 rows each and
/// more), beside the ones whose steps split.
#[test]
fn large_batches_in_blocks_are_bitwise_identical() {
    common::split_small_steps();
    let pools = vec![(1, pool(1)), (2, pool(2)), (3, pool(3))];
    for (variant, direction) in [(2, 0), (3, 2), (7, 3), (0, 1), (8, 0), (4, 0)] {
        let case = Case {
            variant,
            direction,
            layers: 2,
            input: 3,
            hidden: 40,
            seq_len: 3,
            batch: 50,
            seed: 21,
        };
        if let Err(e) = check_case(&case, &pools) {
            panic!("{}: {case:?}: {e}", cell_variants(1, 1)[variant].0);
        }
    }
}

/// Eight threads share one model and loop calls on small batches; every
/// result equals the one computed alone, on `pool` (or librnn's own pool).
/// A two-layer bidirectional LSTM: its directions take a member each.
const SHARED: Case = Case {
    variant: 2, // lstm
    direction: 2,
    layers: 2,
    input: 7,
    hidden: 96,
    seq_len: 6,
    batch: 2,
    seed: 5,
};

fn many_callers(pool: Option<&rayon::ThreadPool>) {
    many_callers_of(&SHARED, pool)
}

fn many_callers_of(case: &Case, pool: Option<&rayon::ThreadPool>) {
    let config = case.config();
    let model = Model::random(config.clone(), case.seed);
    let batches: Vec<Batch> = (0..4)
        .map(|k| {
            random_batch(
                &mut SplitMix64::new(k),
                &config,
                case.seq_len,
                1 + k as usize,
            )
        })
        .collect();
    let call = |k: usize| {
        let go = || run(&model, &batches[k], case.seq_len, 1 + k, k as u64);
        match pool {
            Some(p) => p.install(go),
            None => go(),
        }
    };
    let expected: Vec<Results> = (0..batches.len()).map(call).collect();
    std::thread::scope(|s| {
        for t in 0..8 {
            let (call, expected) = (&call, &expected);
            s.spawn(move || {
                for round in 0..12 {
                    let k = (t + round) % expected.len();
                    if let Err(e) = same_bits(&expected[k], &call(k)) {
                        panic!("thread {t}, round {round}, batch {k}: {e}");
                    }
                }
            });
        }
    });
}

#[test]
fn eight_threads_sharing_a_model_on_a_two_thread_pool_get_exact_results() {
    common::split_small_steps();
    many_callers(Some(&pool(2)));
}

#[test]
fn eight_threads_sharing_a_model_on_librnns_pool_get_exact_results() {
    common::split_small_steps();
    many_callers(None);
}

/// A model small enough that each call runs on its caller's thread rather
/// than on librnn's pool: eight such calls at once, and the same calls on
/// a pool of two, give the bits of one call alone.
#[test]
fn eight_threads_sharing_a_small_model_each_on_its_own_thread_get_exact_results() {
    common::split_small_steps();
    let small = Case {
        direction: 0,
        layers: 1,
        hidden: 16,
        ..SHARED
    };
    many_callers_of(&small, None);
    many_callers_of(&small, Some(&pool(2)));
}

/// Calls from inside `rayon::scope` on the caller's pool, some while the
/// pool's other workers are busy (a team must not wait for them), some
/// nested in a parallel iterator.
#[test]
fn calls_nested_in_the_callers_rayon_work_finish_with_exact_results() {
    common::split_small_steps();
    use rayon::prelude::*;
    let case = Case {
        variant: 7, // gru_reset_before
        direction: 1,
        layers: 1,
        input: 4,
        hidden: 128,
        seq_len: 5,
        batch: 1,
        seed: 9,
    };
    let config = case.config();
    let model = Model::random(config.clone(), case.seed);
    let b = random_batch(&mut SplitMix64::new(3), &config, case.seq_len, case.batch);
    let go = || run(&model, &b, case.seq_len, case.batch, 1);
    let expected = pool(1).install(go);
    let p = pool(2);
    p.install(|| {
        let busy = std::sync::atomic::AtomicBool::new(true);
        rayon::scope(|s| {
            s.spawn(|_| {
                // Keeps a worker busy for a while.
                while busy.load(std::sync::atomic::Ordering::Acquire) {
                    std::thread::yield_now();
                }
            });
            for _ in 0..5 {
                same_bits(&expected, &go()).unwrap();
            }
            busy.store(false, std::sync::atomic::Ordering::Release);
        });
        let all: Vec<Results> = (0..6).into_par_iter().map(|_| go()).collect();
        for r in &all {
            same_bits(&expected, r).unwrap();
        }
    });
}

//! Training utilities: a tiny run whose loss falls, checkpoints (round trip
//! and rejection of corrupt or mismatched files), truncated BPTT against
//! full BPTT, clipping, and the output layer's gradients.

use rnn::rng::SplitMix64;
use rnn::train::{self, Adam, Dense, Sgd, State};
use rnn::{CellKind, Config, Error, Input, Model, OutputGrads};

fn one_hot(text: &[usize], classes: usize) -> Vec<f32> {
    let mut x = vec![0.0; text.len() * classes];
    for (i, &c) in text.iter().enumerate() {
        x[i * classes + c] = 1.0;
    }
    x
}

/// An LSTM and a dense softmax layer learn to predict the next symbol of a
/// periodic sequence: the mean cross-entropy falls below a fifth of the start.
#[test]
fn a_tiny_language_model_learns() {
    let classes = 5;
    let pattern: Vec<usize> = (0..120).map(|i| [0, 1, 2, 3, 4, 3, 2, 1][i % 8]).collect();
    let (seq_len, batch) = (16, 4);
    let config = Config::builder(CellKind::Lstm, classes, 16)
        .build()
        .unwrap();
    let mut model = Model::random(config, 1);
    let mut dense = Dense::new(16, classes, 2);
    let (mut opt_rnn, mut opt_dense) = (Adam::new(0.02), Adam::new(0.02));
    let mut losses = Vec::new();
    for step in 0..80 {
        // Time-major batch: item b starts at offset 7b + step.
        let mut inputs = Vec::new();
        let mut targets = Vec::new();
        for t in 0..seq_len {
            for b in 0..batch {
                let at = (7 * b + step + t) % (pattern.len() - 1);
                inputs.push(pattern[at]);
                targets.push(pattern[at + 1]);
            }
        }
        let x = one_hot(&inputs, classes);
        let (out, trace) = model
            .forward_training(&Input::new(&x, seq_len, batch))
            .unwrap();
        let logits = dense.forward(&out.y).unwrap();
        let (loss, dlogits) = train::softmax_cross_entropy(&logits, classes, &targets).unwrap();
        let (dy, mut ddense) = dense.backward(&out.y, &dlogits).unwrap();
        let mut g = model.backward(&trace, &OutputGrads::new(&dy)).unwrap();
        train::clip_grad_norm_all(&mut [&mut g.dparams, &mut ddense], 5.0);
        opt_rnn.step(model.params_mut(), &g.dparams);
        opt_dense.step(&mut dense.params, &ddense);
        losses.push(loss);
    }
    let (first, last) = (
        losses[0],
        losses[losses.len() - 5..].iter().sum::<f32>() / 5.0,
    );
    assert!(last < 0.2 * first, "cross-entropy {first} -> {last}");
}

#[test]
fn sgd_with_momentum_minimises_a_quadratic() {
    let mut p = vec![3.0f32, -2.0];
    let mut sgd = Sgd::new(0.1, 0.9);
    for _ in 0..200 {
        let g: Vec<f32> = p.iter().map(|v| 2.0 * v).collect();
        sgd.step(&mut p, &g);
    }
    assert!(p.iter().all(|v| v.abs() < 1e-3), "{p:?}");
}

fn sample_model() -> Model {
    let config = Config::builder(CellKind::Gru, 3, 4)
        .num_layers(2)
        .build()
        .unwrap();
    Model::random(config, 9)
}

#[test]
fn checkpoints_round_trip() {
    let model = sample_model();
    let dense = Dense::new(4, 6, 3);
    let dir = std::env::temp_dir().join(format!("librnn-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.ckpt");
    train::save(&path, &model, &[("dense", &dense.params)]).unwrap();
    let loaded = train::load(&path).unwrap();
    assert_eq!(loaded.model.config(), model.config());
    assert_eq!(loaded.model.params(), model.params());
    assert_eq!(loaded.extra("dense").unwrap(), &dense.params[..]);
    assert!(loaded.extra("missing").is_none());
    let x = vec![0.3; 2 * 3];
    let input = Input::new(&x, 2, 1);
    assert_eq!(
        loaded.model.forward_inference(&input).unwrap(),
        model.forward_inference(&input).unwrap()
    );
    std::fs::remove_dir_all(dir).ok();
}

fn checkpoint_error(bytes: &[u8]) -> String {
    match train::checkpoint::from_bytes(bytes) {
        Err(Error::Checkpoint(msg)) => msg,
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

#[test]
fn corrupt_and_mismatched_checkpoints_are_rejected() {
    let good = train::checkpoint::to_bytes(&sample_model(), &[("extra", &[1.0, 2.0])]);
    assert!(train::checkpoint::from_bytes(&good).is_ok());

    assert!(checkpoint_error(b"hello").contains("bad magic"));
    assert!(checkpoint_error(&good[..good.len() / 2]).contains("checksum"));
    let mut flipped = good.clone();
    flipped[60] ^= 0x40;
    assert!(checkpoint_error(&flipped).contains("checksum"));
    let mut version = good.clone();
    version[8] = 7;
    assert!(checkpoint_error(&version).contains("version 7"));

    // A well-formed file whose parameter count does not fit its configuration.
    let reseal = |mut body: Vec<u8>| {
        body.truncate(body.len() - 8);
        let sum = body.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        body.extend(sum.to_le_bytes());
        body
    };
    let mut wrong_count = good.clone();
    // Magic, version, six codes, four sizes, cell clip, gate clip and
    // input_forget, empty-sequence state and six activation functions.
    let count_at = 8 + 4 + 24 + 32 + 4 + 8 + 4 + 6 * 12;
    let n = u64::from_le_bytes(wrong_count[count_at..count_at + 8].try_into().unwrap());
    wrong_count[count_at..count_at + 8].copy_from_slice(&(n - 1).to_le_bytes());
    let msg = checkpoint_error(&reseal(wrong_count));
    assert!(
        msg.contains("mismatched") || msg.contains("truncated") || msg.contains("unexpected"),
        "{msg}"
    );
    let mut bad_cell = good.clone();
    bad_cell[12] = 9;
    assert!(checkpoint_error(&reseal(bad_cell)).contains("invalid cell code 9"));
    let input_forget_at = 8 + 4 + 24 + 32 + 4 + 4;
    for (at, value, says) in [
        (input_forget_at, 2, "invalid input_forget code 2"),
        (
            input_forget_at + 4,
            5,
            "invalid empty-sequence state code 5",
        ),
        (input_forget_at + 8 + 12, 99, "invalid activation code 99"),
    ] {
        let mut bad = good.clone();
        bad[at] = value;
        let msg = checkpoint_error(&reseal(bad));
        assert!(msg.contains(says), "{msg}");
    }
    assert!(matches!(
        train::load("/nonexistent/dir/x.ckpt"),
        Err(Error::Checkpoint(_))
    ));
}

/// Saves are atomic: a save that cannot complete leaves the previous file
/// byte-identical, and a reader running alongside repeated saves always
/// loads a whole checkpoint (the old one or the new one).
#[test]
fn saves_are_atomic() {
    let dir = std::env::temp_dir().join(format!("librnn-atomic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.ckpt");
    let models: Vec<Model> = (0..2)
        .map(|seed| {
            let config = Config::builder(CellKind::Gru, 5, 24).build().unwrap();
            Model::random(config, seed)
        })
        .collect();
    train::save(&path, &models[0], &[]).unwrap();
    let before = std::fs::read(&path).unwrap();

    // The directory of the target vanishes: an error naming it, and nothing
    // else changes.
    let gone = dir.join("gone");
    std::fs::create_dir(&gone).unwrap();
    std::fs::remove_dir(&gone).unwrap();
    match train::save(gone.join("model.ckpt"), &models[1], &[]) {
        Err(Error::Checkpoint(msg)) => assert!(msg.contains("gone"), "{msg}"),
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);

    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut loads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || loads == 0 {
                let loaded = train::load(&path).expect("a reader sees a whole checkpoint");
                assert!(models.iter().any(|m| m.params() == loaded.model.params()));
                loads += 1;
            }
            loads
        });
        for i in 0..200 {
            train::save(&path, &models[i % 2], &[]).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    });
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["model.ckpt"], "no temporary files are left");
    std::fs::remove_dir_all(dir).ok();
}

/// Loading refuses what is not a regular file at once (a FIFO would block,
/// /dev/zero would read without end) and a directory.
#[test]
fn loads_refuse_what_is_not_a_regular_file() {
    let dir = std::env::temp_dir().join(format!("librnn-special-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status();
    let mut cases = vec![
        (std::path::PathBuf::from("/dev/zero"), "a device"),
        (dir.clone(), "a directory"),
    ];
    if status.is_ok_and(|s| s.success()) {
        cases.push((fifo, "a FIFO"));
    }
    for (path, kind) in cases {
        match train::load(&path) {
            Err(Error::Checkpoint(msg)) => assert!(msg.contains(kind), "{msg}"),
            other => panic!(
                "{}: expected a checkpoint error, got {other:?}",
                path.display()
            ),
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn truncated_bptt_with_k_equal_to_t_is_full_bptt() {
    let config = Config::builder(CellKind::Lstm, 3, 5)
        .num_layers(2)
        .build()
        .unwrap();
    let model = Model::random(config, 4);
    let (t, n) = (7, 2);
    let mut rng = SplitMix64::new(5);
    let x = rng.uniform_vec(t * n * 3, -1.0, 1.0);
    let dy = rng.uniform_vec(t * n * 5, -1.0, 1.0);
    let full = {
        let (out, trace) = model.forward_training(&Input::new(&x, t, n)).unwrap();
        (out, model.backward(&trace, &OutputGrads::new(&dy)).unwrap())
    };
    for k in [t, t + 3] {
        let result = train::truncated_bptt(&model, &x, t, n, k, None, |steps, out| {
            assert_eq!(steps, 0..t);
            assert_eq!(out.y, full.0.y);
            Ok((1.0, dy.clone()))
        })
        .unwrap();
        assert_eq!(result.dparams, full.1.dparams, "k = {k}");
        assert_eq!(result.state, State::from_output(&full.0));
        assert_eq!(result.loss, 1.0);
    }
}

#[test]
fn truncated_bptt_carries_state_and_confines_gradients() {
    let config = Config::builder(CellKind::Gru, 2, 4).build().unwrap();
    let model = Model::random(config, 6);
    let (t, n, k) = (9, 3, 4);
    let mut rng = SplitMix64::new(7);
    let x = rng.uniform_vec(t * n * 2, -1.0, 1.0);
    let dy = rng.uniform_vec(t * n * 4, -1.0, 1.0);
    let full = model.forward_inference(&Input::new(&x, t, n)).unwrap();
    let result = train::truncated_bptt(&model, &x, t, n, k, None, |steps, out| {
        // The carried state makes each chunk's outputs those of the full pass.
        let rows = steps.start * n * 4..steps.end * n * 4;
        for (a, b) in out.y.iter().zip(&full.y[rows.clone()]) {
            assert!((a - b).abs() < 1e-6);
        }
        Ok((0.0, dy[rows].to_vec()))
    })
    .unwrap();
    for (a, b) in result.state.h.iter().zip(&full.h_n) {
        assert!((a - b).abs() < 1e-6);
    }
    // Same gradients as backpropagating each chunk by hand from its start state.
    let mut manual = vec![0.0; model.params().len()];
    let mut state: Option<Vec<f32>> = None;
    for start in (0..t).step_by(k) {
        let end = (start + k).min(t);
        let chunk = &x[start * n * 2..end * n * 2];
        let mut input = Input::new(chunk, end - start, n);
        if let Some(h) = &state {
            input = input.with_h0(h);
        }
        let (out, trace) = model.forward_training(&input).unwrap();
        let g = model
            .backward(&trace, &OutputGrads::new(&dy[start * n * 4..end * n * 4]))
            .unwrap();
        manual.iter_mut().zip(&g.dparams).for_each(|(m, g)| *m += g);
        state = Some(out.h_n);
    }
    assert_eq!(result.dparams, manual);
    assert!(matches!(
        train::truncated_bptt(&model, &x, t, n, 0, None, |_, _| unreachable!()),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn clipping_bounds_the_norm() {
    let mut g = vec![3.0f32, 4.0, 0.0];
    let norm = train::clip_grad_norm(&mut g, 1.0);
    assert_eq!(norm, 5.0);
    let clipped = g.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!(
        (clipped - 1.0).abs() < 1e-6 && (g[0] / g[1] - 0.75).abs() < 1e-6,
        "{g:?}"
    );
    let mut small = vec![0.1f32, 0.2];
    train::clip_grad_norm(&mut small, 1.0);
    assert_eq!(small, vec![0.1, 0.2], "below the bound nothing changes");
    let (mut a, mut b) = (vec![3.0f32], vec![4.0f32]);
    assert_eq!(train::clip_grad_norm_all(&mut [&mut a, &mut b], 2.5), 5.0);
    assert!((a[0] - 1.5).abs() < 1e-6 && (b[0] - 2.0).abs() < 1e-6);
    let mut v = vec![-3.0f32, 0.5, 9.0];
    train::clip_grad_value(&mut v, 1.0);
    assert_eq!(v, vec![-1.0, 0.5, 1.0]);
}

/// Finite gradients whose norm overflows f32 are still clipped; non-finite
/// ones are left alone and reported through the norm.
#[test]
fn clipping_handles_norms_beyond_f32_and_non_finite_gradients() {
    let mut huge = vec![3e38f32, 3e38, -3e38];
    let norm = train::clip_grad_norm(&mut huge, 1.0);
    assert_eq!(norm, f32::INFINITY, "the norm 5.2e38 does not fit in f32");
    let clipped = huge
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt();
    assert!((clipped - 1.0).abs() < 1e-6, "{huge:?}");
    let third = 1.0 / 3f32.sqrt();
    assert!(
        huge.iter().all(|v| (v.abs() - third).abs() < 1e-6),
        "{huge:?}"
    );
    // Many values near f32::MAX: no overflow of the sum either.
    let mut many = vec![f32::MAX; 1000];
    train::clip_grad_norm(&mut many, 2.0);
    let clipped = many
        .iter()
        .map(|&v| f64::from(v).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!((clipped - 2.0).abs() < 1e-5, "{clipped}");

    for bad in [f32::NAN, f32::INFINITY] {
        let mut g = vec![1.0f32, bad, 2.0];
        let norm = train::clip_grad_norm(&mut g, 1.0);
        assert!(!norm.is_finite());
        assert_eq!(&g[..1], &[1.0]);
        assert_eq!(g[2], 2.0, "non-finite gradients are left unchanged");
    }
}

/// The dense layer and both losses against central differences (f32, so a
/// loose tolerance).
#[test]
#[allow(clippy::needless_range_loop)]
fn output_layer_gradients_match_finite_differences() {
    let mut rng = SplitMix64::new(8);
    let (rows, inputs, classes) = (3, 4, 5);
    let mut dense = Dense::new(inputs, classes, 1);
    let x = rng.uniform_vec(rows * inputs, -1.0, 1.0);
    let targets = vec![1, train::IGNORE, 4];
    let loss = |d: &Dense, x: &[f32]| {
        train::softmax_cross_entropy(&d.forward(x).unwrap(), classes, &targets)
            .unwrap()
            .0
    };
    let (_, dlogits) =
        train::softmax_cross_entropy(&dense.forward(&x).unwrap(), classes, &targets).unwrap();
    let (dx, dparams) = dense.backward(&x, &dlogits).unwrap();
    let eps = 1e-2;
    for i in 0..dense.params.len() {
        let orig = dense.params[i];
        dense.params[i] = orig + eps;
        let plus = loss(&dense, &x);
        dense.params[i] = orig - eps;
        let minus = loss(&dense, &x);
        dense.params[i] = orig;
        assert!(
            ((plus - minus) / (2.0 * eps) - dparams[i]).abs() < 2e-3,
            "dparams[{i}]"
        );
    }
    for i in 0..x.len() {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[i] += eps;
        xm[i] -= eps;
        assert!(
            ((loss(&dense, &xp) - loss(&dense, &xm)) / (2.0 * eps) - dx[i]).abs() < 2e-3,
            "dx[{i}]"
        );
    }
    let (l, g) = train::mse(&[1.0, 2.0], &[0.0, 4.0]).unwrap();
    assert_eq!((l, g), (2.5, vec![1.0, -2.0]));
    assert!(
        train::softmax_cross_entropy(&[0.0; 4], 2, &[0, 2]).is_err(),
        "a target out of range is an error"
    );
}

/// A NaN logit (a diverged network, a NaN learning rate) makes the loss
/// NaN: it must not be clamped into a finite number that hides it.
#[test]
fn non_finite_logits_give_a_non_finite_loss() {
    for bad in [f32::NAN, f32::INFINITY] {
        let logits = [0.5, bad, -1.0, 0.0, 1.0, 2.0];
        let (loss, grad) = train::softmax_cross_entropy(&logits, 3, &[0, 2]).unwrap();
        assert!(loss.is_nan(), "logit {bad}: loss {loss}");
        assert!(
            grad[..3].iter().all(|g| g.is_nan()),
            "logit {bad}: {grad:?}"
        );
        assert!(
            grad[3..].iter().all(|g| g.is_finite()),
            "the other row is fine"
        );
    }
    // A certain miss is large but finite (the clamp's purpose).
    let (loss, _) = train::softmax_cross_entropy(&[0.0, 200.0], 2, &[0]).unwrap();
    assert!(loss.is_finite() && loss > 60.0, "{loss}");
}

/// Gate clip and input_forget round trip; a version-1 file (no such fields)
/// still loads.
#[test]
fn checkpoints_keep_onnx_options_and_read_version_1() {
    let config = Config::builder(CellKind::Lstm, 3, 4)
        .gate_clip(Some(0.75))
        .input_forget(true)
        .build()
        .unwrap();
    let bytes = train::checkpoint::to_bytes(&Model::random(config.clone(), 3), &[]);
    let loaded = train::checkpoint::from_bytes(&bytes).unwrap();
    assert_eq!(loaded.model.config(), &config);

    let model = sample_model();
    let v3 = train::checkpoint::to_bytes(&model, &[]);
    // Version 1: the same bytes without the 8 after the cell clip, nor the
    // 76 of version 3 after those; version 2: without the 76.
    let fields_end = 8 + 4 + 24 + 32 + 4;
    let older = |version: u32, keep: usize| {
        let mut old = v3[..fields_end + keep].to_vec();
        old[8..12].copy_from_slice(&version.to_le_bytes());
        if keep > 0 {
            // Before version 3, no gate clip was stored as 0 (now NaN).
            old[fields_end..fields_end + 4].copy_from_slice(&0f32.to_le_bytes());
        }
        old.extend(&v3[fields_end + 8 + 76..v3.len() - 8]);
        let sum = old.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        old.extend(sum.to_le_bytes());
        old
    };
    for (version, keep) in [(1, 0), (2, 8)] {
        let loaded = train::checkpoint::from_bytes(&older(version, keep)).unwrap();
        assert_eq!(loaded.model.config(), model.config(), "version {version}");
        assert_eq!(loaded.model.params(), model.params(), "version {version}");
    }
}

/// Adam and SGD state saved in a checkpoint and restored: the resumed
/// optimiser takes exactly the steps the uninterrupted one takes.
#[test]
fn optimiser_state_resumes_exactly() {
    let grad = |p: &[f32], k: usize| -> Vec<f32> {
        p.iter()
            .enumerate()
            .map(|(i, v)| 2.0 * v + (i + k) as f32 * 0.1)
            .collect()
    };
    let model = sample_model();
    let mut adam = Adam::new(0.01);
    let mut sgd = Sgd::new(0.05, 0.9);
    let (mut pa, mut ps) = (vec![1.0f32, -2.0, 0.5], vec![1.0f32, -2.0, 0.5]);
    for k in 0..3 {
        let g = grad(&pa, k);
        adam.step(&mut pa, &g);
        let g = grad(&ps, k);
        sgd.step(&mut ps, &g);
    }
    let mut extras = adam.state("adam");
    extras.extend(sgd.state("sgd"));
    let named: Vec<(&str, &[f32])> = extras
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let ck = train::checkpoint::from_bytes(&train::checkpoint::to_bytes(&model, &named)).unwrap();
    let (mut adam2, mut sgd2) = (Adam::new(0.01), Sgd::new(0.05, 0.9));
    adam2.restore(&ck, "adam").unwrap();
    sgd2.restore(&ck, "sgd").unwrap();
    assert_eq!(adam2.steps(), 3);
    let (mut pa2, mut ps2) = (pa.clone(), ps.clone());
    for k in 3..6 {
        let g = grad(&pa, k);
        adam.step(&mut pa, &g);
        let g = grad(&pa2, k);
        adam2.step(&mut pa2, &g);
        let g = grad(&ps, k);
        sgd.step(&mut ps, &g);
        let g = grad(&ps2, k);
        sgd2.step(&mut ps2, &g);
    }
    assert_eq!(pa, pa2);
    assert_eq!(ps, ps2);

    // Missing or inconsistent state is an error, and leaves the optimiser alone.
    assert!(matches!(
        Adam::new(0.01).restore(&ck, "other"),
        Err(Error::Checkpoint(_))
    ));
    let bad = train::checkpoint::to_bytes(
        &model,
        &[("a.m", &[1.0, 2.0]), ("a.v", &[1.0]), ("a.t", &[0.0, 1.0])],
    );
    let bad = train::checkpoint::from_bytes(&bad).unwrap();
    let mut fresh = Adam::new(0.01);
    assert!(matches!(
        fresh.restore(&bad, "a"),
        Err(Error::Checkpoint(_))
    ));
    assert_eq!(fresh.steps(), 0);
}

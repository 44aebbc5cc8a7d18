//! Character-level language model: the README's main job.
//!
//! Trains an LSTM (or GRU / RNN) with a softmax output layer to predict the
//! next character of a text (by default `data/genesis.txt`, the King James
//! Genesis), with truncated BPTT over a batch of streams through the text,
//! gradient clipping and Adam. Shows a progress bar with the loss and
//! characters per second, prints generated samples as it goes, writes the
//! loss curve as an SVG and a checkpoint that `--generate` loads. The last
//! 10 % of the text is held out of training: its cross-entropy is measured
//! every few seconds (progress bar, summary, plot), and the checkpoint kept
//! is the one where it was best; `--evaluate` reports the checkpoint's
//! held-out cross-entropy in f32, bf16 and int8 (`rnn::Precision`).
//!
//! ```text
//! cargo run --release --example char_rnn                       # train (about 100 s)
//! cargo run --release --example char_rnn -- --generate        # sample from the checkpoint
//! cargo run --release --example char_rnn -- --generate --precision int8
//! cargo run --release --example char_rnn -- --evaluate        # held-out loss, f32 vs bf16 vs int8
//! cargo run --release --example char_rnn -- --help
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rnn::rng::SplitMix64;
use rnn::train::{self, Adam, Dense, State};
use rnn::{CellKind, Config, Input, Model, Precision};

const HELP: &str = "char_rnn: train a character-level RNN, or generate text with it.

options:
  --text FILE         text (default data/genesis.txt); its last 10 % is held
                      out of training, and the checkpoint written is the one
                      with the best cross-entropy on it
  --cell lstm|gru|rnn (default lstm)
  --hidden N          hidden size (default 256)
  --layers N          stacked layers (default 1)
  --seq-len N         truncated-BPTT chunk length (default 64)
  --batch N           parallel streams through the text (default 32)
  --seconds S         training time budget (default 100)
  --steps N           stop after N steps (default: time budget only)
  --lr X              Adam learning rate (default 0.003)
  --out DIR           checkpoint and plot directory (default target/char_rnn)
  --resume            continue training from DIR/checkpoint.bin: network,
                      output layer and Adam state (the cell and sizes come
                      from the checkpoint)
  --generate          load DIR/checkpoint.bin and print generated text
  --evaluate          load DIR/checkpoint.bin and print its cross-entropy on
                      the held-out text in f32, bf16 and int8
  --precision P       f32, bf16 or int8: the network's inference precision for
                      --generate (default f32; training is always f32)
  --length N          characters to generate (default 600)
  --prime TEXT        text to start generation from (default \"And God said\")
  --temperature X     sampling temperature (default 0.7)
  --seed N            random seed (default 1)";

#[derive(Debug)]
struct Options {
    text: PathBuf,
    cell: CellKind,
    hidden: usize,
    layers: usize,
    seq_len: usize,
    batch: usize,
    seconds: f64,
    steps: Option<usize>,
    lr: f32,
    out: PathBuf,
    resume: bool,
    generate: bool,
    evaluate: bool,
    precision: Precision,
    length: usize,
    prime: String,
    temperature: f32,
    seed: u64,
    /// Whether `--cell`, `--hidden` or `--layers` was given (so `--resume`
    /// can refuse a checkpoint that disagrees, rather than ignore them).
    network_given: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        text: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/genesis.txt"),
        cell: CellKind::Lstm,
        hidden: 256,
        layers: 1,
        seq_len: 64,
        batch: 32,
        seconds: 100.0,
        steps: None,
        lr: 0.003,
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/char_rnn"),
        resume: false,
        generate: false,
        evaluate: false,
        precision: Precision::F32,
        length: 600,
        prime: "And God said".into(),
        temperature: 0.7,
        seed: 1,
        network_given: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        // A finite number, or a count (a whole number, not negative).
        let num = |v: String| match v.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(x),
            _ => Err(format!("{flag}: {v} is not a finite number")),
        };
        let count = |v: String| {
            v.parse::<usize>()
                .map_err(|_| format!("{flag}: {v} is not a whole number of at least 0"))
        };
        match flag.as_str() {
            "--help" | "-h" => return Err(HELP.into()),
            "--text" => o.text = value()?.into(),
            "--cell" => {
                o.network_given = true;
                o.cell = match value()?.as_str() {
                    "lstm" => CellKind::Lstm,
                    "gru" => CellKind::Gru,
                    "rnn" => CellKind::Rnn,
                    other => return Err(format!("--cell: unknown cell {other}")),
                }
            }
            "--hidden" => {
                o.network_given = true;
                o.hidden = count(value()?)?
            }
            "--layers" => {
                o.network_given = true;
                o.layers = count(value()?)?
            }
            "--seq-len" => o.seq_len = count(value()?)?,
            "--batch" => o.batch = count(value()?)?,
            "--seconds" => o.seconds = num(value()?)?,
            "--steps" => o.steps = Some(count(value()?)?),
            "--lr" => o.lr = num(value()?)? as f32,
            "--out" => o.out = value()?.into(),
            "--resume" => o.resume = true,
            "--generate" => o.generate = true,
            "--evaluate" => o.evaluate = true,
            "--precision" => {
                o.precision =
                    Precision::from_name(&value()?).map_err(|e| format!("--precision: {e}"))?
            }
            "--length" => o.length = count(value()?)?,
            "--prime" => o.prime = value()?,
            "--temperature" => o.temperature = num(value()?)? as f32,
            "--seed" => o.seed = count(value()?)? as u64,
            other => return Err(format!("unknown option {other}\n\n{HELP}")),
        }
    }
    if o.seq_len == 0 || o.batch == 0 || o.hidden == 0 || o.layers == 0 {
        return Err("--seq-len, --batch, --hidden and --layers must be at least 1".into());
    }
    if o.seconds <= 0.0 || o.seconds > 1e9 {
        return Err(format!(
            "--seconds: {} is not a time budget (more than 0, in seconds)",
            o.seconds
        ));
    }
    if !(o.lr > 0.0 && o.lr.is_finite()) {
        return Err(format!(
            "--lr: {} is not a learning rate (more than 0)",
            o.lr
        ));
    }
    if !(o.temperature > 0.0 && o.temperature.is_finite()) {
        return Err(format!(
            "--temperature: {} must be more than 0",
            o.temperature
        ));
    }
    Ok(o)
}

/// The characters of the text, as a sorted vocabulary and indices into it:
/// `ids` for training, `held_out` (the last 10 %) for evaluation only.
struct Corpus {
    vocab: Vec<char>,
    ids: Vec<usize>,
    held_out: Vec<usize>,
}

impl Corpus {
    fn load(path: &Path) -> Result<Corpus, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let vocab: Vec<char> = text.chars().collect::<BTreeSet<_>>().into_iter().collect();
        let ids = text
            .chars()
            .map(|c| vocab.binary_search(&c).unwrap())
            .collect::<Vec<_>>();
        let mut ids = ids;
        let held_out = ids.split_off(ids.len() - ids.len() / 10);
        if held_out.len() < 2 {
            return Err(format!(
                "{}: {} characters is too short: its last 10 % is held out and must have at least 2",
                path.display(),
                ids.len() + held_out.len()
            ));
        }
        Ok(Corpus {
            vocab,
            ids,
            held_out,
        })
    }
}

/// The network: recurrent layers plus a dense softmax layer over the vocabulary.
struct CharModel {
    rnn: Model,
    dense: Dense,
    vocab: Vec<char>,
}

impl CharModel {
    fn id(&self, c: char) -> Option<usize> {
        self.vocab.binary_search(&c).ok()
    }

    fn one_hot(&self, ids: &[usize]) -> Vec<f32> {
        let v = self.vocab.len();
        let mut x = vec![0.0; ids.len() * v];
        for (i, &id) in ids.iter().enumerate() {
            x[i * v + id] = 1.0;
        }
        x
    }

    /// Generates `length` characters after `prime`.
    fn sample(&self, prime: &str, length: usize, temperature: f32, rng: &mut SplitMix64) -> String {
        let mut state: Option<State> = None;
        let prime_ids: Vec<usize> = prime.chars().filter_map(|c| self.id(c)).collect();
        let mut next = *prime_ids.first().unwrap_or(&0);
        let mut text: String = prime.to_string();
        let feed: Vec<usize> = if prime_ids.is_empty() {
            vec![0]
        } else {
            prime_ids
        };
        for (i, &id) in feed
            .iter()
            .chain(std::iter::repeat(&usize::MAX))
            .enumerate()
        {
            if i >= feed.len() + length {
                break;
            }
            let input_id = if id == usize::MAX { next } else { id };
            let x = self.one_hot(&[input_id]);
            let mut input = Input::new(&x, 1, 1);
            if let Some(s) = &state {
                input = input.with_h0(&s.h);
                if let Some(c) = &s.c {
                    input = input.with_c0(c);
                }
            }
            let out = self
                .rnn
                .forward_inference(&input)
                .expect("shapes are consistent");
            state = Some(State::from_output(&out));
            if i + 1 < feed.len() {
                continue;
            }
            let mut p = self.dense.forward(&out.y).expect("shapes are consistent");
            p.iter_mut().for_each(|v| *v /= temperature.max(1e-3));
            train::softmax_in_place(&mut p);
            let r = rng.next_f64() as f32;
            let mut acc = 0.0;
            next = p
                .iter()
                .position(|&q| {
                    acc += q;
                    acc > r
                })
                .unwrap_or(p.len() - 1);
            text.push(self.vocab[next]);
        }
        text
    }
}

fn checkpoint_path(o: &Options) -> PathBuf {
    o.out.join("checkpoint.bin")
}

/// Adam state names inside the checkpoint.
const ADAM_RNN: &str = "adam_rnn";
const ADAM_DENSE: &str = "adam_dense";

fn train(o: &Options) -> Result<(), Box<dyn std::error::Error>> {
    let corpus = Corpus::load(&o.text)?;
    let v = corpus.vocab.len();
    let (mut adam_rnn, mut adam_dense) = (Adam::new(o.lr), Adam::new(o.lr));
    let wanted = Config::builder(o.cell, v, o.hidden)
        .num_layers(o.layers)
        .build()?;
    let describe = |c: &Config| {
        let cell = match c.cell() {
            CellKind::Lstm => "an LSTM",
            CellKind::Gru => "a GRU",
            CellKind::Rnn => "an RNN",
        };
        format!(
            "{cell} with hidden size {} and {} layer(s)",
            c.hidden_size(),
            c.num_layers()
        )
    };
    // The history of earlier runs (after --resume), for the plot.
    let (mut losses, mut validation): (Curve, Curve) = (Vec::new(), Vec::new());
    let mut net = if o.resume {
        let (net, ck) = load_net(o)?;
        if net.vocab != corpus.vocab {
            return Err(format!(
                "--resume: the checkpoint's vocabulary ({} characters) is not the text's ({})",
                net.vocab.len(),
                v
            )
            .into());
        }
        let have = net.rnn.config();
        let same = have.cell() == wanted.cell()
            && have.hidden_size() == wanted.hidden_size()
            && have.num_layers() == wanted.num_layers();
        if o.network_given && !same {
            return Err(format!(
                "--resume: the checkpoint holds {}, not {} as asked \
                 (drop --cell/--hidden/--layers to continue it, or pass another --out)",
                describe(have),
                describe(&wanted)
            )
            .into());
        }
        adam_rnn.restore(&ck, ADAM_RNN)?;
        adam_dense.restore(&ck, ADAM_DENSE)?;
        losses = history(&ck, LOSS_HISTORY);
        validation = history(&ck, VALIDATION_HISTORY);
        println!("resuming after step {}", adam_rnn.steps());
        net
    } else {
        // Never overwrite another network's checkpoint without a word.
        if let Ok(ck) = train::load(checkpoint_path(o)) {
            if ck.model.config() != &wanted {
                return Err(format!(
                    "{} holds {}; training {} would overwrite it: \
                     --resume it, pass another --out, or delete the file",
                    checkpoint_path(o).display(),
                    describe(ck.model.config()),
                    describe(&wanted)
                )
                .into());
            }
        }
        CharModel {
            rnn: Model::try_random(wanted.clone(), o.seed)?,
            dense: Dense::new(o.hidden, v, o.seed + 1),
            vocab: corpus.vocab.clone(),
        }
    };
    if corpus.ids.len() <= o.seq_len {
        return Err(format!(
            "{}: {} characters to train on (after holding out 10 %) is too short for --seq-len {}: \
             give a longer --text or a smaller --seq-len",
            o.text.display(),
            corpus.ids.len(),
            o.seq_len
        )
        .into());
    }
    let config = net.rnn.config().clone();
    println!(
        "training a {:?} (hidden {}, {} layer(s), {} + {} parameters) on {} ({} characters, vocabulary {}) on {}",
        config.cell(),
        config.hidden_size(),
        config.num_layers(),
        net.rnn.params().len(),
        net.dense.params.len(),
        o.text.display(),
        corpus.ids.len(),
        v,
        net.rnn.isa()?.name(),
    );
    let mut rng = SplitMix64::new(o.seed + 2);
    // Stream b reads the text from its own offset, `seq_len` characters per step.
    // A stream starts at an offset whose k characters and their successors
    // are all in the text: 0..=span - k (span >= k was checked above).
    let span = corpus.ids.len() - 1;
    let mut offsets: Vec<usize> = (0..o.batch).map(|b| b * span / o.batch).collect();
    let mut state: Option<State> = None;
    let budget = Duration::from_secs_f64(o.seconds);
    // The bar measures the time budget: elapsed / budget, and the steps.
    let bar = ProgressBar::new(budget.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} / {} [{{bar:20}}] {{wide_msg}}",
            indicatif::FormattedDuration(budget)
        ))
        .unwrap(),
    );
    let started = Instant::now();
    let mut smoothed = None;
    let mut last_sample = Instant::now();
    // Held-out cross-entropy every few seconds; the checkpoint kept is the
    // one with the best of it.
    let mut last_eval = Instant::now();
    let mut best: Option<(usize, f32)> = None;
    std::fs::create_dir_all(&o.out)?;
    let first_step = adam_rnn.steps() as usize;
    let mut step = first_step;
    while started.elapsed() < budget && o.steps.is_none_or(|n| step - first_step < n) {
        let (k, n) = (o.seq_len, o.batch);
        let mut inputs = vec![0; k * n];
        let mut targets = vec![0; k * n];
        for (b, off) in offsets.iter_mut().enumerate() {
            if *off + k > span {
                *off = rng.below(span - k + 1);
            }
            for t in 0..k {
                inputs[t * n + b] = corpus.ids[*off + t];
                targets[t * n + b] = corpus.ids[*off + t + 1];
            }
            *off += k;
        }
        let x = net.one_hot(&inputs);
        let mut ddense = Vec::new();
        let dense = &net.dense;
        let result = train::truncated_bptt(&net.rnn, &x, k, n, k, state.as_ref(), |_, out| {
            let logits = dense.forward(&out.y)?;
            let (loss, dlogits) = train::softmax_cross_entropy(&logits, v, &targets)?;
            let (dy, dd) = dense.backward(&out.y, &dlogits)?;
            ddense = dd;
            Ok((loss, dy))
        })?;
        if !result.loss.is_finite() {
            // Diverged: stop before the update, keep the checkpoint on disk.
            bar.abandon();
            let kept = match best {
                Some((at, val)) => format!(
                    "{} keeps the weights of step {at} (held-out {val:.3})",
                    checkpoint_path(o).display()
                ),
                None => "no checkpoint was written by this run".into(),
            };
            return Err(format!(
                "the training loss is {} at step {}: stopping (try a smaller --lr); {kept}",
                result.loss,
                step + 1
            )
            .into());
        }
        let mut dparams = result.dparams;
        train::clip_grad_norm_all(&mut [&mut dparams, &mut ddense], 5.0);
        adam_rnn.step(net.rnn.params_mut(), &dparams);
        adam_dense.step(&mut net.dense.params, &ddense);
        state = Some(result.state);
        step += 1;

        let loss = result.loss;
        let s = smoothed.map_or(loss, |s: f32| 0.95 * s + 0.05 * loss);
        smoothed = Some(s);
        losses.push((step, loss));
        let chars_per_s = ((step - first_step) * k * n) as f64 / started.elapsed().as_secs_f64();
        bar.set_position(started.elapsed().as_millis().min(budget.as_millis()) as u64);
        if last_eval.elapsed() > EVAL_EVERY {
            last_eval = Instant::now();
            let val = held_out_loss(&net, &corpus.held_out)?;
            validation.push((step, val));
            if best.is_none_or(|(_, b)| val < b) {
                best = Some((step, val));
                save_checkpoint(o, &net, &adam_rnn, &adam_dense, &losses, &validation)?;
            }
        }
        let val = validation
            .last()
            .map_or(String::new(), |&(_, v)| format!("  held-out {v:.3}"));
        bar.set_message(format!(
            "step {step}  loss {s:.3} (nats/char){val}  {chars_per_s:.0} chars/s"
        ));
        if last_sample.elapsed() > Duration::from_secs(20) {
            last_sample = Instant::now();
            let text = net.sample(&o.prime, 160, o.temperature, &mut rng);
            // suspend + println, not bar.println: the sample must also reach
            // a log when stderr is not a terminal and the bar is hidden.
            bar.suspend(|| {
                println!(
                    "--- sample at step {step}, loss {s:.3}:\n{}\n",
                    text.trim_end()
                )
            });
        }
    }
    // The summary gets lines of its own, below a finished bar.
    bar.finish_and_clear();
    let val = held_out_loss(&net, &corpus.held_out)?;
    validation.push((step, val));
    if best.is_none_or(|(_, b)| val < b) {
        best = Some((step, val));
        save_checkpoint(o, &net, &adam_rnn, &adam_dense, &losses, &validation)?;
    }
    let final_loss = smoothed.unwrap_or(f32::NAN);
    let elapsed = started.elapsed().as_secs_f64();
    let steps = step - first_step;
    println!(
        "{steps} steps in {elapsed:.1} s, {:.0} characters/s; final loss {final_loss:.3} nats/char ({:.2} bits/char)",
        (steps * o.seq_len * o.batch) as f64 / elapsed,
        final_loss / std::f32::consts::LN_2
    );
    let (best_step, best_val) = best.expect("evaluated at least once");
    println!(
        "held-out cross-entropy {val:.3} nats/char; the checkpoint keeps the best, {best_val:.3} at step {best_step}"
    );
    let plot = o.out.join("loss.svg");
    plot_losses(&plot, &losses, &validation)?;
    println!(
        "checkpoint: {}\nloss curve: {}",
        checkpoint_path(o).display(),
        plot.display()
    );
    println!(
        "--- generated:\n{}",
        net.sample(&o.prime, o.length, o.temperature, &mut rng)
    );
    Ok(())
}

/// How often training measures the held-out cross-entropy (about 0.15 s
/// each for the default model, 3 % of the time).
const EVAL_EVERY: Duration = Duration::from_secs(5);

/// Saves the network, the output layer, the vocabulary and both optimisers'
/// state to DIR/checkpoint.bin (atomically: a failed save keeps the old).
fn save_checkpoint(
    o: &Options,
    net: &CharModel,
    adam_rnn: &Adam,
    adam_dense: &Adam,
    losses: &[(usize, f32)],
    validation: &[(usize, f32)],
) -> Result<(), Box<dyn std::error::Error>> {
    let vocab: Vec<f32> = net.vocab.iter().map(|&c| c as u32 as f32).collect();
    let dims = [net.dense.inputs as f32, net.dense.outputs as f32];
    let optimiser = [adam_rnn.state(ADAM_RNN), adam_dense.state(ADAM_DENSE)].concat();
    let mut extras: Vec<(&str, &[f32])> = vec![
        ("dense", &net.dense.params),
        ("dense_shape", &dims),
        ("vocab", &vocab),
    ];
    extras.extend(optimiser.iter().map(|(n, v)| (n.as_str(), v.as_slice())));
    let (loss_history, validation_history) = (flatten(losses), flatten(validation));
    extras.push((LOSS_HISTORY, &loss_history));
    extras.push((VALIDATION_HISTORY, &validation_history));
    train::save(checkpoint_path(o), &net.rnn, &extras)?;
    Ok(())
}

/// A loss curve: `(step, nats/char)` points.
type Curve = Vec<(usize, f32)>;

/// Checkpoint names of the training and held-out loss curves so far.
const LOSS_HISTORY: &str = "loss_history";
const VALIDATION_HISTORY: &str = "validation_history";

/// `(step, loss)` pairs as `[step, loss, step, loss, ...]` (steps are exact
/// in f32 up to 2^24).
fn flatten(points: &[(usize, f32)]) -> Vec<f32> {
    points.iter().flat_map(|&(s, l)| [s as f32, l]).collect()
}

/// The curve `name` of a checkpoint (empty in one from before it was kept).
fn history(ck: &train::Checkpoint, name: &str) -> Vec<(usize, f32)> {
    ck.extra(name)
        .unwrap_or(&[])
        .chunks_exact(2)
        .map(|p| (p[0] as usize, p[1]))
        .collect()
}

fn plot_losses(
    path: &Path,
    losses: &[(usize, f32)],
    validation: &[(usize, f32)],
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_step = losses.last().map_or(1, |l| l.0).max(1);
    let max_loss = losses
        .iter()
        .chain(validation)
        .map(|l| l.1)
        .filter(|l| l.is_finite())
        .fold(0.0f32, f32::max)
        .max(0.1);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "char_rnn: cross-entropy on the training text and on the held-out 10 %",
            ("sans-serif", 18),
        )
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0..max_step, 0f32..max_loss * 1.05)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("cross-entropy (nats/char)")
        .draw()?;
    let light = RGBColor(120, 160, 220);
    chart
        .draw_series(LineSeries::new(losses.iter().map(|&(s, l)| (s, l)), &light))?
        .label("training, per step")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], light));
    // A moving average over 50 steps.
    let mut smooth = Vec::with_capacity(losses.len());
    for i in 0..losses.len() {
        let window = &losses[i.saturating_sub(49)..=i];
        smooth.push((
            losses[i].0,
            window.iter().map(|l| l.1).sum::<f32>() / window.len() as f32,
        ));
    }
    chart
        .draw_series(LineSeries::new(smooth, &RED))?
        .label("training, mean of 50 steps")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    let green = RGBColor(0, 140, 60);
    chart
        .draw_series(LineSeries::new(
            validation.iter().copied(),
            green.stroke_width(2),
        ))?
        .label("held-out")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], green));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The network saved in DIR/checkpoint.bin, and the checkpoint (for the
/// optimiser state).
fn load_net(o: &Options) -> Result<(CharModel, train::Checkpoint), Box<dyn std::error::Error>> {
    let ck = train::load(checkpoint_path(o))?;
    let missing =
        |name: &str| format!("the checkpoint has no `{name}` tensor: was it written by char_rnn?");
    let vocab: Vec<char> = ck
        .extra("vocab")
        .ok_or_else(|| missing("vocab"))?
        .iter()
        .map(|&c| char::from_u32(c as u32).unwrap_or('?'))
        .collect();
    let dims = ck
        .extra("dense_shape")
        .ok_or_else(|| missing("dense_shape"))?;
    let dense = Dense::from_params(
        dims[0] as usize,
        dims[1] as usize,
        ck.extra("dense").ok_or_else(|| missing("dense"))?.to_vec(),
    )?;
    let net = CharModel {
        rnn: ck.model.clone(),
        dense,
        vocab,
    };
    Ok((net, ck))
}

fn generate(o: &Options) -> Result<(), Box<dyn std::error::Error>> {
    let (mut net, _) = load_net(o)?;
    net.rnn.set_precision(o.precision);
    let mut rng = SplitMix64::new(o.seed);
    println!(
        "{}",
        net.sample(&o.prime, o.length, o.temperature, &mut rng)
    );
    Ok(())
}

/// Mean cross-entropy (nats/char) of predicting each held-out character
/// from those before it, over 16 streams through the held-out text, each
/// starting from a zero state.
fn held_out_loss(net: &CharModel, ids: &[usize]) -> Result<f32, Box<dyn std::error::Error>> {
    let streams = 16.min(ids.len().saturating_sub(1)).max(1);
    let t = (ids.len() - 1) / streams;
    if t == 0 {
        return Err("the held-out text is too short to evaluate".into());
    }
    let (mut inputs, mut targets) = (vec![0; t * streams], vec![0; t * streams]);
    for b in 0..streams {
        for step in 0..t {
            inputs[step * streams + b] = ids[b * t + step];
            targets[step * streams + b] = ids[b * t + step + 1];
        }
    }
    let x = net.one_hot(&inputs);
    let out = net.rnn.forward_inference(&Input::new(&x, t, streams))?;
    let logits = net.dense.forward(&out.y)?;
    let (loss, _) = train::softmax_cross_entropy(&logits, net.vocab.len(), &targets)?;
    Ok(loss)
}

fn evaluate(o: &Options) -> Result<(), Box<dyn std::error::Error>> {
    let corpus = Corpus::load(&o.text)?;
    let (mut net, _) = load_net(o)?;
    if net.vocab != corpus.vocab {
        return Err("--evaluate: the checkpoint's vocabulary is not the text's".into());
    }
    net.rnn.set_precision(Precision::F32);
    let f32_loss = held_out_loss(&net, &corpus.held_out)?;
    println!(
        "held-out cross-entropy ({} characters) on {}: f32 {f32_loss:.4} nats/char",
        corpus.held_out.len(),
        net.rnn.isa()?.name()
    );
    for precision in Precision::ALL.into_iter().filter(|&p| p != Precision::F32) {
        net.rnn.set_precision(precision);
        let loss = held_out_loss(&net, &corpus.held_out)?;
        println!(
            "{:>4}: {loss:.4} nats/char ({:+.3} % against f32)",
            precision.name(),
            100.0 * (loss - f32_loss) / f32_loss
        );
    }
    Ok(())
}

fn main() {
    let options = match parse_options() {
        Ok(o) => o,
        Err(msg) if msg == HELP => {
            println!("{HELP}");
            return;
        }
        Err(msg) => {
            eprintln!("char_rnn: {msg}");
            std::process::exit(2);
        }
    };
    let result = if options.evaluate {
        evaluate(&options)
    } else if options.generate {
        generate(&options)
    } else {
        train(&options)
    };
    if let Err(e) = result {
        eprintln!("char_rnn: {e}");
        std::process::exit(1);
    }
}

//! Encoder–decoder with attention: dates written many ways, to ISO form.
//!
//! "23 Nov 2026", "November 23, 2026", "2026/11/23", "23.11.2026", ... →
//! "2026-11-23". A bidirectional LSTM encodes the characters; an LSTM
//! decoder, fed its previous character and the previous attention context
//! (input feeding), attends over the encoder's outputs
//! (`rnn::attention`, Bahdanau's additive score by default) at every step; a dense layer on `[h; context]`
//! predicts the next character. Trained with teacher forcing, Adam and
//! gradient clipping on dates generated here; exact-match accuracy is
//! measured on held-out dates (inputs never trained on) by greedy decoding.
//! Writes a checkpoint and an attention heat map (SVG) of a few held-out
//! examples, whose diagonal shows where each output character looked.
//!
//! ```text
//! cargo run --release --example seq2seq                         # train (stops at 99 %)
//! cargo run --release --example seq2seq -- --translate "4 July 1976" "1999/12/31"
//! cargo run --release --example seq2seq -- --help
//! ```

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rnn::attention::{Attention, Score};
use rnn::rng::SplitMix64;
use rnn::train::{self, Adam, Dense};
use rnn::{CellKind, Config, Direction, Input, Model, OutputGrads};

const HELP: &str = "seq2seq: learn to rewrite dates in ISO form with attention.

options:
  --seconds S        training time budget (default 110)
  --target A         stop once held-out exact-match reaches A (default 0.99)
  --score S          dot, general or additive attention (default additive)
  --hidden N         encoder hidden size per direction (default 64; the
                     decoder has 2N)
  --batch N          examples per step (default 64)
  --lr X             Adam learning rate (default 0.003)
  --seed N           random seed (default 1)
  --out DIR          checkpoint and heat map directory (default target/seq2seq)
  --translate TEXT.. load DIR/checkpoint.bin and rewrite each TEXT";

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
/// Output length: "YYYY-MM-DD".
const OUT_LEN: usize = 10;
/// Held-out examples, and how many of them each evaluation decodes.
const HELD_OUT: usize = 1000;

#[derive(Debug)]
struct Options {
    seconds: f64,
    target: f64,
    score: Score,
    hidden: usize,
    batch: usize,
    lr: f32,
    seed: u64,
    out: PathBuf,
    translate: Vec<String>,
}

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        seconds: 110.0,
        target: 0.99,
        score: Score::Additive,
        hidden: 64,
        batch: 64,
        lr: 0.003,
        seed: 1,
        out: PathBuf::from("target/seq2seq"),
        translate: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("seq2seq: {arg} needs a value"));
        let number = |v: String| {
            v.parse::<f64>()
                .map_err(|_| format!("seq2seq: {arg}: not a number: {v}"))
        };
        match arg.as_str() {
            "--help" | "-h" => return Err(HELP.into()),
            "--seconds" => o.seconds = number(value()?)?,
            "--target" => o.target = number(value()?)?,
            "--score" => {
                let v = value()?;
                o.score = Score::ALL
                    .into_iter()
                    .find(|s| s.name() == v)
                    .ok_or(format!(
                        "seq2seq: --score: expected dot, general or additive, not {v}"
                    ))?
            }
            "--hidden" => o.hidden = number(value()?)? as usize,
            "--batch" => o.batch = number(value()?)? as usize,
            "--lr" => o.lr = number(value()?)? as f32,
            "--seed" => o.seed = number(value()?)? as u64,
            "--out" => o.out = PathBuf::from(value()?),
            "--translate" => o.translate.extend(args.by_ref()),
            other => return Err(format!("seq2seq: unknown option {other}\n\n{HELP}")),
        }
    }
    let valid = o.seconds.is_finite()
        && o.seconds > 0.0
        && (0.0..=1.0).contains(&o.target)
        && (1..=4096).contains(&o.hidden)
        && (1..=4096).contains(&o.batch)
        && o.lr.is_finite()
        && o.lr > 0.0;
    if !valid {
        return Err(
            "seq2seq: --seconds and --lr must be positive, --target in [0, 1], \
                    --hidden and --batch in 1..=4096"
                .into(),
        );
    }
    Ok(o)
}

/// A random date in 1900..=2099 written one of seven ways, and its ISO form.
fn random_date(rng: &mut SplitMix64) -> (String, String) {
    let year = 1900 + rng.below(200);
    let month = 1 + rng.below(12);
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ][month - 1];
    let day = 1 + rng.below(days);
    let name = MONTHS[month - 1];
    let short = &name[..3];
    let text = match rng.below(7) {
        0 => format!("{day} {short} {year}"),
        1 => format!("{name} {day}, {year}"),
        2 => format!("{year}/{month:02}/{day:02}"),
        3 => format!("{day:02}.{month:02}.{year}"),
        4 => format!("{short} {day} {year}"),
        5 => format!("{day} {} {year}", name.to_uppercase()),
        _ => format!("{day:02}-{}-{year}", short.to_lowercase()),
    };
    (text, format!("{year}-{month:02}-{day:02}"))
}

/// Characters to ids: every character the generator can write, then the
/// decoder's start symbol.
struct Vocab {
    chars: Vec<char>,
}

impl Vocab {
    fn new() -> Vocab {
        let mut set: BTreeSet<char> = "0123456789 ,./-".chars().collect();
        for m in MONTHS {
            set.extend(m.chars());
            set.extend(m.to_uppercase().chars());
            set.extend(m.to_lowercase().chars());
        }
        Vocab {
            chars: set.into_iter().collect(),
        }
    }
    fn len(&self) -> usize {
        self.chars.len() + 1
    }
    fn start(&self) -> usize {
        self.chars.len()
    }
    fn id(&self, c: char) -> Option<usize> {
        self.chars.binary_search(&c).ok()
    }
    fn ids(&self, text: &str) -> Result<Vec<usize>, String> {
        text.chars()
            .map(|c| {
                self.id(c)
                    .ok_or(format!("seq2seq: no character {c:?} in the vocabulary"))
            })
            .collect()
    }
}

/// The networks: encoder, decoder, attention and output layer.
struct Net {
    vocab: Vocab,
    encoder: Model,
    decoder: Model,
    attention: Attention,
    dense: Dense,
}

type Fallible<T> = Result<T, Box<dyn std::error::Error>>;

/// A decoded output and, per output character, its attention weights over
/// the input characters.
type Decoded = (String, Vec<Vec<f32>>);

/// One decoder step of a batch, kept for backward.
struct Step {
    trace: rnn::Trace,
    h: Vec<f32>,
    attended: rnn::attention::Attended,
}

impl Net {
    fn new(o: &Options) -> Fallible<Net> {
        let vocab = Vocab::new();
        let v = vocab.len();
        let (e, d) = (2 * o.hidden, 2 * o.hidden);
        let encoder = Config::builder(CellKind::Lstm, v, o.hidden)
            .direction(Direction::BidirectionalConcat)
            .build()?;
        let decoder = Config::builder(CellKind::Lstm, v + e, d).build()?;
        Ok(Net {
            encoder: Model::random(encoder, o.seed),
            decoder: Model::random(decoder, o.seed + 1),
            attention: Attention::new(o.score, e, d, o.hidden, o.seed + 2)?,
            dense: Dense::new(d + e, v, o.seed + 3),
            vocab,
        })
    }

    fn enc_size(&self) -> usize {
        self.attention.encoder_size()
    }

    /// Time-major one-hot encoder inputs `[T, N, V]` and lengths.
    fn encoder_input(&self, texts: &[Vec<usize>]) -> (Vec<f32>, usize, Vec<usize>) {
        let (n, v) = (texts.len(), self.vocab.len());
        let t = texts.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut x = vec![0.0; t * n * v];
        for (b, ids) in texts.iter().enumerate() {
            for (s, &id) in ids.iter().enumerate() {
                x[(s * n + b) * v + id] = 1.0;
            }
        }
        (x, t, texts.iter().map(Vec::len).collect())
    }

    /// A decoder step's input `[1, N, V + E]`: previous characters, one-hot,
    /// then the previous contexts.
    fn decoder_input(&self, prev: &[usize], context: &[f32]) -> Vec<f32> {
        let (v, e) = (self.vocab.len(), self.enc_size());
        let mut x = vec![0.0; prev.len() * (v + e)];
        for (b, row) in x.chunks_exact_mut(v + e).enumerate() {
            row[prev[b]] = 1.0;
            row[v..].copy_from_slice(&context[b * e..][..e]);
        }
        x
    }

    /// `[h; context]` rows `[N, D + E]`.
    fn features(h: &[f32], context: &[f32], n: usize) -> Vec<f32> {
        let (d, e) = (h.len() / n, context.len() / n);
        let mut out = Vec::with_capacity(n * (d + e));
        for b in 0..n {
            out.extend_from_slice(&h[b * d..][..d]);
            out.extend_from_slice(&context[b * e..][..e]);
        }
        out
    }

    /// Greedy decoding of `texts`; also each one's attention weights
    /// `[OUT_LEN][T]`.
    fn translate(&self, texts: &[Vec<usize>]) -> Fallible<Vec<Decoded>> {
        let n = texts.len();
        let (x, t, lens) = self.encoder_input(texts);
        let enc = self
            .encoder
            .forward_inference(&Input::new(&x, t, n).with_seq_lens(&lens))?;
        let memory = self.attention.memory(&enc.y, t, n, Some(&lens))?;
        let d = self.decoder.config().hidden_size();
        let (mut h, mut c) = (vec![0.0; n * d], vec![0.0; n * d]);
        let mut context = vec![0.0; n * self.enc_size()];
        let mut prev = vec![self.vocab.start(); n];
        let mut out = vec![(String::new(), Vec::new()); n];
        for _ in 0..OUT_LEN {
            let xd = self.decoder_input(&prev, &context);
            let step = self
                .decoder
                .forward_inference(&Input::new(&xd, 1, n).with_h0(&h).with_c0(&c))?;
            let attended = self.attention.attend(&memory, &step.y)?;
            let logits = self
                .dense
                .forward(&Self::features(&step.y, &attended.context, n))?;
            let v = self.vocab.len();
            for b in 0..n {
                let row = &logits[b * v..][..v - 1];
                let best = (0..row.len()).fold(0, |m, i| if row[i] > row[m] { i } else { m });
                prev[b] = best;
                out[b].0.push(self.vocab.chars[best]);
                out[b].1.push(attended.weights[b * t..][..lens[b]].to_vec());
            }
            h = step.h_n;
            c = step.c_n.unwrap_or_default();
            context = attended.context;
        }
        Ok(out)
    }

    /// One training step on a batch: forward with teacher forcing, backward
    /// through the decoder steps in reverse, the attention and the encoder;
    /// clipped gradients. Returns the loss and the gradients of the encoder,
    /// decoder, attention and dense parameters.
    fn gradients(
        &self,
        inputs: &[Vec<usize>],
        targets: &[Vec<usize>],
    ) -> Fallible<(f32, [Vec<f32>; 4])> {
        let n = inputs.len();
        let (v, e) = (self.vocab.len(), self.enc_size());
        let (x, t, lens) = self.encoder_input(inputs);
        let enc_input = Input::new(&x, t, n).with_seq_lens(&lens);
        let (enc, enc_trace) = self.encoder.forward_training(&enc_input)?;
        let memory = self.attention.memory(&enc.y, t, n, Some(&lens))?;
        let d = self.decoder.config().hidden_size();
        let (mut h, mut c) = (vec![0.0; n * d], vec![0.0; n * d]);
        let mut context = vec![0.0; n * e];
        let mut prev = vec![self.vocab.start(); n];
        let mut steps = Vec::with_capacity(OUT_LEN);
        let mut features = Vec::with_capacity(OUT_LEN * n * (d + e));
        for s in 0..OUT_LEN {
            let xd = self.decoder_input(&prev, &context);
            let (out, trace) = self
                .decoder
                .forward_training(&Input::new(&xd, 1, n).with_h0(&h).with_c0(&c))?;
            let attended = self.attention.attend(&memory, &out.y)?;
            features.extend(Self::features(&out.y, &attended.context, n));
            prev = targets.iter().map(|t| t[s]).collect();
            h = out.h_n;
            c = out.c_n.unwrap_or_default();
            context = attended.context.clone();
            steps.push(Step {
                trace,
                h: out.y,
                attended,
            });
        }
        let logits = self.dense.forward(&features)?;
        let flat: Vec<usize> = (0..OUT_LEN)
            .flat_map(|s| targets.iter().map(move |t| t[s]))
            .collect();
        let (loss, dlogits) = train::softmax_cross_entropy(&logits, v, &flat)?;
        let (dfeatures, d_dense) = self.dense.backward(&features, &dlogits)?;
        let mut d_decoder = vec![0.0; self.decoder.params().len()];
        let mut grads = self.attention.start_backward(&memory)?;
        // From the step after: the state's gradients and the context's
        // (through that step's input).
        let (mut dh_next, mut dc_next) = (vec![0.0; n * d], vec![0.0; n * d]);
        let mut dcontext_next = vec![0.0; n * e];
        for (s, step) in steps.iter().enumerate().rev() {
            let rows = &dfeatures[s * n * (d + e)..][..n * (d + e)];
            let mut dh = vec![0.0; n * d];
            let mut dcontext = dcontext_next.clone();
            for b in 0..n {
                let row = &rows[b * (d + e)..][..d + e];
                dh[b * d..][..d].copy_from_slice(&row[..d]);
                dcontext[b * e..][..e]
                    .iter_mut()
                    .zip(&row[d..])
                    .for_each(|(x, g)| *x += g);
            }
            let dq = self.attention.backward(
                &memory,
                &step.h,
                &step.attended,
                &dcontext,
                None,
                &mut grads,
            )?;
            dh.iter_mut().zip(&dq).for_each(|(x, g)| *x += g);
            let g = self.decoder.backward(
                &step.trace,
                &OutputGrads::new(&dh)
                    .with_dh_n(&dh_next)
                    .with_dc_n(&dc_next),
            )?;
            d_decoder
                .iter_mut()
                .zip(&g.dparams)
                .for_each(|(x, g)| *x += g);
            for b in 0..n {
                dcontext_next[b * e..][..e].copy_from_slice(&g.dx[b * (v + e) + v..][..e]);
            }
            dh_next = g.dh0;
            dc_next = g.dc0.unwrap_or_default();
        }
        let attention = self.attention.finish_backward(&memory, grads)?;
        let g_enc = self
            .encoder
            .backward(&enc_trace, &OutputGrads::new(&attention.d_encoder_outputs))?;
        let mut all = [g_enc.dparams, d_decoder, attention.d_params, d_dense];
        let [a, b, c, d] = &mut all;
        train::clip_grad_norm_all(&mut [a, b, c, d], 5.0);
        Ok((loss, all))
    }
}

/// Held-out exact-match accuracy over `examples` (greedy decoding).
fn accuracy(net: &Net, examples: &[(Vec<usize>, String)]) -> Fallible<f64> {
    let mut right = 0;
    for chunk in examples.chunks(250) {
        let texts: Vec<Vec<usize>> = chunk.iter().map(|(x, _)| x.clone()).collect();
        let got = net.translate(&texts)?;
        right += got
            .iter()
            .zip(chunk)
            .filter(|((g, _), (_, want))| g == want)
            .count();
    }
    Ok(right as f64 / examples.len().max(1) as f64)
}

fn checkpoint_path(o: &Options) -> PathBuf {
    o.out.join("checkpoint.bin")
}

fn save(o: &Options, net: &Net) -> Fallible<()> {
    let score = Score::ALL
        .iter()
        .position(|&s| s == net.attention.score())
        .unwrap_or(0);
    let dims = [
        score as f32,
        net.attention.encoder_size() as f32,
        net.attention.attention_size() as f32,
    ];
    let decoder_codes: Vec<f32> = vec![
        net.decoder.config().input_size() as f32,
        net.decoder.config().hidden_size() as f32,
    ];
    train::save(
        checkpoint_path(o),
        &net.encoder,
        &[
            ("decoder", net.decoder.params()),
            ("decoder_shape", &decoder_codes),
            ("attention", net.attention.params()),
            ("attention_shape", &dims),
            ("dense", &net.dense.params),
        ],
    )?;
    Ok(())
}

fn load(o: &Options) -> Fallible<Net> {
    let path = checkpoint_path(o);
    let ck = train::load(&path).map_err(|e| format!("{}: {e} (train first)", path.display()))?;
    let extra = |name: &str| {
        ck.extra(name)
            .ok_or(format!("{}: no {name}", path.display()))
    };
    let (dims, dec_shape) = (extra("attention_shape")?, extra("decoder_shape")?);
    let (score, e, a) = (dims[0] as usize, dims[1] as usize, dims[2] as usize);
    let (dec_in, d) = (dec_shape[0] as usize, dec_shape[1] as usize);
    let vocab = Vocab::new();
    let decoder = Config::builder(CellKind::Lstm, dec_in, d).build()?;
    Ok(Net {
        encoder: ck.model.clone(),
        decoder: Model::from_params(decoder, extra("decoder")?.to_vec())?,
        attention: Attention::from_params(
            *Score::ALL.get(score).ok_or("bad score in the checkpoint")?,
            e,
            d,
            a,
            extra("attention")?.to_vec(),
        )?,
        dense: Dense::from_params(d + e, vocab.len(), extra("dense")?.to_vec())?,
        vocab,
    })
}

/// Attention weights of a few examples as heat maps, one panel each:
/// rows the output characters, columns the input characters.
fn heat_map(path: &Path, examples: &[(String, String, Vec<Vec<f32>>)]) -> Fallible<()> {
    use plotters::prelude::*;
    let cell = 22;
    let width = 40
        + examples
            .iter()
            .map(|(x, _, _)| x.chars().count() * cell + 60)
            .sum::<usize>();
    let height = 70 + (OUT_LEN + 2) * cell;
    let root = SVGBackend::new(path, (width as u32, height as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    root.draw(&Text::new(
        "seq2seq attention: output character (rows) looking at input characters (columns)",
        (20, 12),
        ("sans-serif", 16),
    ))?;
    let mut left = 40;
    for (input, output, weights) in examples {
        let top = 60;
        for (j, ch) in input.chars().enumerate() {
            let x = (left + j * cell + 6) as i32;
            root.draw(&Text::new(
                ch.to_string(),
                (x, top as i32 - 18),
                ("monospace", 15),
            ))?;
        }
        for (i, (ch, row)) in output.chars().zip(weights).enumerate() {
            let y = (top + i * cell) as i32;
            root.draw(&Text::new(
                ch.to_string(),
                (left as i32 - 16, y + 4),
                ("monospace", 15),
            ))?;
            for (j, &w) in row.iter().enumerate() {
                let shade = (255.0 * (1.0 - w.clamp(0.0, 1.0))) as u8;
                let x = (left + j * cell) as i32;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell as i32 - 1, y + cell as i32 - 1)],
                    RGBColor(shade, shade, 255).filled(),
                ))?;
            }
        }
        left += input.chars().count() * cell + 60;
    }
    root.present()?;
    Ok(())
}

fn train(o: &Options) -> Fallible<()> {
    let mut net = Net::new(o)?;
    let mut rng = SplitMix64::new(o.seed + 10);
    // Held-out dates: their inputs are never trained on.
    let mut held_out = Vec::with_capacity(HELD_OUT);
    let mut unseen = HashSet::new();
    while held_out.len() < HELD_OUT {
        let (x, y) = random_date(&mut rng);
        if unseen.insert(x.clone()) {
            held_out.push((net.vocab.ids(&x)?, y));
        }
    }
    let mut adams = [
        Adam::new(o.lr),
        Adam::new(o.lr),
        Adam::new(o.lr),
        Adam::new(o.lr),
    ];
    println!(
        "seq2seq: bidirectional LSTM encoder (H = {} per direction), LSTM decoder (H = {}) with {} attention and input feeding; {} parameters; batch {}, held out {HELD_OUT}",
        o.hidden,
        net.decoder.config().hidden_size(),
        o.score.name(),
        net.encoder.params().len() + net.decoder.params().len() + net.attention.params().len() + net.dense.params.len(),
        o.batch,
    );
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{elapsed_precise} {wide_msg}").unwrap());
    let (started, budget) = (Instant::now(), Duration::from_secs_f64(o.seconds));
    let (mut step, mut smoothed, mut best) = (0usize, None, 0.0f64);
    let mut reached_95: Option<Duration> = None;
    let mut last_eval = Instant::now();
    std::fs::create_dir_all(&o.out)?;
    while started.elapsed() < budget {
        let (mut inputs, mut targets) = (Vec::with_capacity(o.batch), Vec::with_capacity(o.batch));
        while inputs.len() < o.batch {
            let (x, y) = random_date(&mut rng);
            if !unseen.contains(&x) {
                inputs.push(net.vocab.ids(&x)?);
                targets.push(net.vocab.ids(&y)?);
            }
        }
        let (loss, grads) = net.gradients(&inputs, &targets)?;
        if !loss.is_finite() {
            return Err(format!("the loss is {loss} at step {step}: stopping").into());
        }
        let params: [&mut [f32]; 4] = [
            net.encoder.params_mut(),
            net.decoder.params_mut(),
            net.attention.params_mut(),
            &mut net.dense.params,
        ];
        for ((adam, p), g) in adams.iter_mut().zip(params).zip(&grads) {
            adam.step(p, g);
        }
        step += 1;
        let s = smoothed.map_or(loss, |s: f32| 0.95 * s + 0.05 * loss);
        smoothed = Some(s);
        if last_eval.elapsed() > Duration::from_secs(5) || started.elapsed() >= budget {
            last_eval = Instant::now();
            let acc = accuracy(&net, &held_out)?;
            if acc > best {
                best = acc;
                save(o, &net)?;
            }
            if acc >= 0.95 && reached_95.is_none() {
                reached_95 = Some(started.elapsed());
            }
            bar.set_message(format!(
                "step {step}  loss {s:.4}  held-out exact match {:.1} % (best {:.1} %)",
                100.0 * acc,
                100.0 * best
            ));
            if acc >= o.target {
                break;
            }
        } else {
            bar.set_message(format!(
                "step {step}  loss {s:.4}  held-out exact match {:.1} % (best)",
                100.0 * best
            ));
        }
        bar.tick();
    }
    bar.finish();
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "seq2seq: {step} steps in {elapsed:.1} s; held-out exact match {:.1} % ({}); checkpoint {}",
        100.0 * best,
        match reached_95 {
            Some(t) => format!("95 % reached after {:.1} s", t.as_secs_f64()),
            None => "95 % not reached".into(),
        },
        checkpoint_path(o).display()
    );
    // Heat maps and samples from the best checkpoint.
    let net = load(o)?;
    let picks: Vec<(Vec<usize>, String)> = held_out.iter().take(4).cloned().collect();
    let decoded = net.translate(&picks.iter().map(|p| p.0.clone()).collect::<Vec<_>>())?;
    let mut maps = Vec::new();
    for ((ids, want), (got, weights)) in picks.iter().zip(decoded) {
        let text: String = ids.iter().map(|&i| net.vocab.chars[i]).collect();
        println!(
            "  {text:>20} -> {got} ({})",
            if &got == want { "right" } else { "wrong" }
        );
        maps.push((text, got, weights));
    }
    let map_path = o.out.join("attention.svg");
    heat_map(&map_path, &maps)?;
    println!("seq2seq: attention heat map {}", map_path.display());
    Ok(())
}

fn translate(o: &Options) -> Fallible<()> {
    let net = load(o)?;
    let texts: Vec<Vec<usize>> = o
        .translate
        .iter()
        .map(|t| net.vocab.ids(t.trim()))
        .collect::<Result<_, _>>()?;
    for (text, (got, _)) in o.translate.iter().zip(net.translate(&texts)?) {
        println!("{text} -> {got}");
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
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    let result = if options.translate.is_empty() {
        train(&options)
    } else {
        translate(&options)
    };
    if let Err(e) = result {
        eprintln!("seq2seq: {e}");
        std::process::exit(1);
    }
}

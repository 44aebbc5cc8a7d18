//! Streaming inference: one time step at a time, for real-time use, with
//! the recurrent state kept between steps.
//!
//! A [`Stream`] holds a batch's state (h, and c for an LSTM, for every
//! layer) and the buffers a step needs, and the threads that run its steps
//! keep their scratch, so a step allocates nothing once the first few have
//! sized it, nor after a reset or a state set (tested in
//! `tests/stream_allocations.rs`: a real-time caller's step never waits on
//! the allocator). Each
//! [`Stream::step`] runs the network over one time step exactly as a whole
//! call runs that step: the outputs and states are the same bits as one
//! [`Model::forward_inference`] call over all the steps pushed (tested in
//! `tests/stream.rs`). Only forward directions can stream: a reversed
//! direction needs the sequence's end first, so `Reverse` and bidirectional
//! models are refused.

use crate::config::Direction;
use crate::engine::helpers::Helpers;
use crate::engine::KeptState;
use crate::error::{check_len, Error, Result};
use crate::io::{Input, Shapes};
use crate::model::Model;

/// A model's state and step buffers for a batch of streams (see the module
/// docs). Made by [`Model::stream`].
///
/// ```
/// use rnn::{CellKind, Config, Model};
///
/// let model = Model::random(Config::builder(CellKind::Lstm, 3, 8).build()?, 1);
/// let mut stream = model.stream(2)?; // two independent streams
/// for t in 0..5 {
///     let x = [0.1 * t as f32; 2 * 3]; // [N, I]: one step of each item
///     let y = stream.step(&x)?; // [N, H]: the step's outputs
///     assert_eq!(y.len(), 2 * 8);
/// }
/// stream.reset_item(1)?; // item 1 starts a new sequence
/// # Ok::<(), rnn::Error>(())
/// ```
#[derive(Debug)]
pub struct Stream<'m> {
    model: &'m Model,
    core: StreamCore,
}

/// The state and buffers of a stream, apart from the model they run on
/// (the C ABI's handle owns its model).
#[derive(Debug)]
pub(crate) struct StreamCore {
    batch: usize,
    /// Layers (each one direction).
    layers: usize,
    shapes: Shapes,
    /// States `[L, N, H_out]` / `[L, N, H]` before and after a step; the
    /// step reads `cur` and writes the other, then they swap.
    h: [Vec<f32>; 2],
    c: [Vec<f32>; 2],
    cur: usize,
    y: Vec<f32>,
    /// Per-item lengths of the one-step call: 1, or 0 for an item that
    /// sits this step out.
    lens: Vec<usize>,
    /// Where steps run (see [`Placement`]).
    placement: Placement,
    /// The state in the engine's padded rows between steps (`h[cur]` and
    /// `c[cur]` are the same values, unpadded); invalidated when those are
    /// set.
    kept: KeptState,
}

/// Where a stream's steps run. A call on librnn's pool pays a hand-off to
/// a worker and, with a team of several threads, their wake-ups: tens of
/// µs that a long call spreads over its steps and a stream would pay at
/// every step. So a stream runs its steps on the caller's thread: alone
/// where the engine would give its layers one thread, else with helper
/// threads of its own ([`Helpers`]) that wait for the next step as a team
/// member waits at a barrier. Those try both ways, alternating, and keep
/// the faster, trying again after [`FEWEST_STEPS_BETWEEN_TRIALS`] steps,
/// and after twice as many each time a trial confirms the choice, up to
/// [`MOST_STEPS_BETWEEN_TRIALS`] (the results are the same bits either
/// way).
#[derive(Debug)]
struct Placement {
    /// None: the engine gives this stream's layers one thread.
    helpers: Option<Helpers>,
    mode: Mode,
    /// Steps from the latest trial to the next.
    interval: usize,
    /// What the latest trial chose: the team (true) or the caller alone.
    chose_team: Option<bool>,
    /// The latest trial's two lists of times, emptied, for the next (so
    /// that a step allocates nothing).
    spare_times: Option<(Vec<f64>, Vec<f64>)>,
}

#[derive(Debug)]
enum Mode {
    /// Step times in seconds, alone and with the helpers, alternating.
    Trial { alone: Vec<f64>, team: Vec<f64> },
    /// Steps run on the caller alone; a trial again after `left` steps.
    Alone { left: usize },
    /// Steps run on a team of the caller and the helpers, unless they are
    /// asleep (steps far apart): then on the caller alone, which wakes
    /// them for the next; a trial again after `left` steps.
    Team { left: usize },
}

impl Mode {
    /// A trial, timing into `spare` lists where there are some.
    fn trial(spare: Option<(Vec<f64>, Vec<f64>)>) -> Mode {
        let (alone, team) = spare.unwrap_or_else(|| {
            let times = || Vec::with_capacity(TRIAL_STEPS + 1);
            (times(), times())
        });
        Mode::Trial { alone, team }
    }
}

/// Timed steps of each placement before a stream chooses (after one
/// untimed step of each, which may pack or warm caches).
const TRIAL_STEPS: usize = 8;

/// Timed steps of each placement after which a trial ends early where
/// one placement's fastest step took more than twice the other's slowest
/// (a team whose helper another process keeps from its core stalls for
/// milliseconds a step; no need to time eight of those).
const EARLY_TRIAL_STEPS: usize = 3;

/// Steps between two trials: from the fewest, doubling each time a trial
/// confirms the previous one's choice, up to the most; back to the fewest
/// when a trial changes it. What is faster changes with the machine's
/// load, and one trial at an unlucky moment would otherwise hold for
/// thousands of steps: measured on a 2-core Zen 1 VM, the first trials of
/// 3 of 6 GRU and LSTM streams fell in a spell when another process held
/// a core (team steps of up to 7.6 ms against 22-240 µs alone) and the
/// streams then ran alone for their next 4096 steps, 1.35-1.48× slower
/// than with the helper once the spell had passed (BENCHMARKS.md,
/// "Streaming on the Zen 1").
/// A trial spends about 9 steps on the slower placement: under 15 % of
/// the fewest steps between trials for a placement 1.0-2.0× slower, under
/// 0.5 % of the most.
const FEWEST_STEPS_BETWEEN_TRIALS: usize = 64;
const MOST_STEPS_BETWEEN_TRIALS: usize = 4096;

impl Placement {
    fn new(helpers: Option<Helpers>) -> Self {
        let mode = match helpers {
            Some(_) => Mode::trial(None),
            None => Mode::Alone { left: usize::MAX },
        };
        Placement {
            helpers,
            mode,
            interval: FEWEST_STEPS_BETWEEN_TRIALS,
            chose_team: None,
            spare_times: None,
        }
    }

    fn on_trial(&self) -> bool {
        matches!(self.mode, Mode::Trial { .. })
    }

    /// The helpers the next step runs with, if any (on trial, whether or
    /// not they are awake).
    fn team(&self) -> Option<&Helpers> {
        let helpers = self.helpers.as_ref()?;
        match &self.mode {
            Mode::Alone { .. } => None,
            Mode::Team { .. } => Some(helpers).filter(|h| !h.asleep()),
            Mode::Trial { alone, team } => (alone.len() > team.len()).then_some(helpers),
        }
    }

    /// Whether the team wins a trial before its end (`None`: not clearly
    /// yet): after [`EARLY_TRIAL_STEPS`] timed steps of each, where one
    /// placement's fastest step is more than twice the other's slowest.
    fn clear_winner(team: &[f64], alone: &[f64]) -> Option<bool> {
        if team.len() < EARLY_TRIAL_STEPS || alone.len() < EARLY_TRIAL_STEPS {
            return None;
        }
        let fastest = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let slowest = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        if fastest(team) > 2.0 * slowest(alone) {
            Some(false)
        } else if fastest(alone) > 2.0 * slowest(team) {
            Some(true)
        } else {
            None
        }
    }

    fn median(v: &mut [f64]) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// After a step, with the helpers or not, that took `seconds` (timed
    /// on trial only).
    fn stepped(&mut self, with_team: bool, seconds: Option<f64>) {
        match &mut self.mode {
            Mode::Trial { alone, team } => {
                let times = if with_team { &mut *team } else { &mut *alone };
                times.extend(seconds);
                // The first of each is a warm-up, left out.
                fn timed(v: &[f64]) -> &[f64] {
                    v.get(1..).unwrap_or_default()
                }
                let choice = match Self::clear_winner(timed(team), timed(alone)) {
                    Some(team_wins) => team_wins,
                    None if alone.len() <= TRIAL_STEPS || team.len() <= TRIAL_STEPS => return,
                    None => Self::median(&mut team[1..]) < Self::median(&mut alone[1..]),
                };
                self.interval = match self.chose_team == Some(choice) {
                    true => (self.interval * 2).min(MOST_STEPS_BETWEEN_TRIALS),
                    false => FEWEST_STEPS_BETWEEN_TRIALS,
                };
                self.chose_team = Some(choice);
                let left = self.interval;
                let next = match choice {
                    true => Mode::Team { left },
                    false => Mode::Alone { left },
                };
                if let Mode::Trial {
                    mut alone,
                    mut team,
                } = std::mem::replace(&mut self.mode, next)
                {
                    alone.clear();
                    team.clear();
                    self.spare_times = Some((alone, team));
                }
            }
            Mode::Alone { left } | Mode::Team { left } => {
                *left = left.saturating_sub(1);
                let due = *left == 0;
                let team_mode = matches!(self.mode, Mode::Team { .. });
                if let Some(helpers) = &self.helpers {
                    if team_mode && !with_team {
                        helpers.wake(); // for the next step, if it comes soon
                    }
                    if due {
                        self.mode = Mode::trial(self.spare_times.take());
                    }
                }
            }
        }
    }
}

/// Which items a step moves on: all, or those whose flag is set (as
/// `bool`s from Rust, bytes from C, so neither is converted per step).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Active<'a> {
    All,
    Flags(&'a [bool]),
    #[cfg(feature = "capi")]
    Bytes(&'a [u8]),
}

impl Active<'_> {
    fn len(&self) -> Option<usize> {
        match self {
            Active::All => None,
            Active::Flags(f) => Some(f.len()),
            #[cfg(feature = "capi")]
            Active::Bytes(b) => Some(b.len()),
        }
    }

    fn is_active(&self, item: usize) -> bool {
        match self {
            Active::All => true,
            Active::Flags(f) => f[item],
            #[cfg(feature = "capi")]
            Active::Bytes(b) => b[item] != 0,
        }
    }
}

impl Model {
    /// A stream of `batch` items over this model, each starting from a
    /// zero state. The model must read its input forward (`Forward`
    /// direction).
    ///
    /// Where librnn's pool has several threads and the engine would split
    /// this model's layers between them at `batch`, the stream starts up
    /// to `threads − 1` helper threads of its own that can run its steps
    /// with the calling thread; it uses them while steps run faster with
    /// them than without (timed on its first steps, again 64 steps later,
    /// and after twice as many steps each time the choice holds, up to
    /// every 4096 steps) and ends them when dropped. Steps are the same
    /// bits either way.
    pub fn stream(&self, batch: usize) -> Result<Stream<'_>> {
        Ok(Stream {
            model: self,
            core: StreamCore::new(self, batch)?,
        })
    }
}

impl StreamCore {
    pub(crate) fn new(model: &Model, batch: usize) -> Result<StreamCore> {
        let config = model.config();
        if config.direction() != Direction::Forward {
            return Err(Error::InvalidArgument(format!(
                "a {:?} model cannot stream: a reversed direction reads the sequence from its end \
                 (only Forward models step one input at a time)",
                config.direction()
            )));
        }
        if batch == 0 {
            return Err(Error::InvalidArgument(
                "a stream needs a batch of at least 1".into(),
            ));
        }
        let shapes = Shapes::new(config, 1, batch)?;
        let zeros = |n: usize, what: &str| crate::error::try_vec(n, 0.0, what);
        Ok(StreamCore {
            batch,
            layers: config.num_layers(),
            h: [
                zeros(shapes.h, "a stream's state")?,
                zeros(shapes.h, "a stream's state")?,
            ],
            c: [
                zeros(shapes.c, "a stream's state")?,
                zeros(shapes.c, "a stream's state")?,
            ],
            cur: 0,
            y: zeros(shapes.y, "a stream's output")?,
            lens: vec![1; batch],
            kept: KeptState::default(),
            placement: Placement::new(match model.team_size(batch)? {
                0 | 1 => None,
                members => Some(Helpers::new(members - 1)?),
            }),
            shapes,
        })
    }

    /// One step; `active[b] == false` leaves item `b`'s state alone and
    /// gives it a zero output.
    pub(crate) fn step(&mut self, model: &Model, x: &[f32], active: Active<'_>) -> Result<&[f32]> {
        check_len("x (one step, [N, I])", self.shapes.x, x.len())?;
        if let Some(len) = active.len() {
            check_len("active", self.batch, len)?;
        }
        for (b, len) in self.lens.iter_mut().enumerate() {
            *len = usize::from(active.is_active(b));
        }
        let some_inactive = !matches!(active, Active::All);
        let (cur, next) = (self.cur, 1 - self.cur);
        let [h0, h1] = &mut self.h;
        let [c0, c1] = &mut self.c;
        let (h_in, h_out) = if cur == 0 { (&*h0, h1) } else { (&*h1, h0) };
        let (c_in, c_out) = if cur == 0 { (&*c0, c1) } else { (&*c1, c0) };
        let mut input = Input::new(x, 1, self.batch).with_h0(h_in);
        if some_inactive {
            input = input.with_seq_lens(&self.lens);
        }
        if model.config().has_cell_state() {
            input = input.with_c0(c_in);
        }
        let c_dest = model.config().has_cell_state().then_some(&mut c_out[..]);
        let team = self.placement.team();
        let with_team = team.is_some();
        // Steps are timed only while the placement is on trial.
        let start = self.placement.on_trial().then(std::time::Instant::now);
        let kept = &mut self.kept;
        let run = || model.stream_step_into(&input, &mut self.y, h_out, c_dest, kept);
        match team {
            Some(helpers) => helpers.install(run)?,
            None => run()?,
        }
        let seconds = start.map(|start| start.elapsed().as_secs_f64());
        self.placement.stepped(with_team, seconds);
        self.cur = next;
        Ok(&self.y)
    }

    fn check_item(&self, item: usize) -> Result<()> {
        if item >= self.batch {
            return Err(Error::InvalidArgument(format!(
                "item {item} is not in this stream's batch of {}",
                self.batch
            )));
        }
        Ok(())
    }

    /// Item `item`'s state, in every layer, back to zero.
    pub(crate) fn reset_item(&mut self, item: usize) -> Result<()> {
        self.check_item(item)?;
        self.kept.invalidate();
        let (batch, layers) = (self.batch, self.layers);
        let cur = self.cur;
        for state in [&mut self.h[cur], &mut self.c[cur]] {
            if state.is_empty() {
                continue;
            }
            let row = state.len() / (layers * batch);
            for l in 0..layers {
                state[(l * batch + item) * row..][..row].fill(0.0);
            }
        }
        Ok(())
    }

    pub(crate) fn reset(&mut self) {
        self.kept.invalidate();
        let cur = self.cur;
        self.h[cur].fill(0.0);
        self.c[cur].fill(0.0);
    }

    pub(crate) fn state(&self) -> (&[f32], &[f32]) {
        (&self.h[self.cur], &self.c[self.cur])
    }

    pub(crate) fn set_state(&mut self, h: &[f32], c: Option<&[f32]>) -> Result<()> {
        check_len("h", self.shapes.h, h.len())?;
        let c = c.unwrap_or(&[]);
        check_len("c", self.shapes.c, c.len())?;
        self.kept.invalidate();
        let cur = self.cur;
        self.h[cur].copy_from_slice(h);
        self.c[cur].copy_from_slice(c);
        Ok(())
    }

    pub(crate) fn batch(&self) -> usize {
        self.batch
    }
}

impl Stream<'_> {
    /// Items in the batch.
    pub fn batch(&self) -> usize {
        self.core.batch()
    }

    /// Runs one time step: `x [N, I]` (item after item) in, the step's
    /// output `[N, H_out]` out; every item's state moves on.
    pub fn step(&mut self, x: &[f32]) -> Result<&[f32]> {
        self.core.step(self.model, x, Active::All)
    }

    /// [`Stream::step`] for the items where `active` is true; the others
    /// keep their state and output zeros (as an item past its length does
    /// in a whole call).
    pub fn step_items(&mut self, x: &[f32], active: &[bool]) -> Result<&[f32]> {
        self.core.step(self.model, x, Active::Flags(active))
    }

    /// Every item's state back to zero.
    pub fn reset(&mut self) {
        self.core.reset()
    }

    /// Item `item`'s state (every layer) back to zero: it starts a new
    /// sequence at the next step.
    pub fn reset_item(&mut self, item: usize) -> Result<()> {
        self.core.reset_item(item)
    }

    /// The current hidden state `[L, N, H_out]`.
    pub fn h(&self) -> &[f32] {
        self.core.state().0
    }

    /// The current cell state `[L, N, H]` (LSTM; empty otherwise).
    pub fn c(&self) -> &[f32] {
        self.core.state().1
    }

    /// Sets the state (`h [L, N, H_out]`, and `c [L, N, H]` for an LSTM).
    pub fn set_state(&mut self, h: &[f32], c: Option<&[f32]>) -> Result<()> {
        self.core.set_state(h, c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CellKind, Config};

    /// A trial alternates the placements and keeps the faster: here the
    /// team; a trial that confirms it comes twice as many steps later; one
    /// where the caller alone is more than twice as fast ends early, and
    /// the next comes after the fewest steps again.
    #[test]
    fn a_stream_keeps_the_faster_placement_and_tries_again_later() {
        let mut placement = Placement::new(Some(Helpers::new(1).unwrap()));
        let interval = FEWEST_STEPS_BETWEEN_TRIALS;
        for (team_time, alone_time, trial_steps, next_interval) in [
            (1.0, 2.0, 2 * (TRIAL_STEPS + 1), interval),
            (1.0, 1.5, 2 * (TRIAL_STEPS + 1), 2 * interval),
            (1.0, 2.0, 2 * (TRIAL_STEPS + 1), 4 * interval),
            // Alone clearly faster: the trial ends after a warm-up and
            // EARLY_TRIAL_STEPS timed steps of each.
            (3.0, 1.0, 2 * (EARLY_TRIAL_STEPS + 1), interval),
        ] {
            assert!(placement.on_trial());
            let mut steps = 0;
            while placement.on_trial() {
                let with_team = placement.team().is_some();
                let time = if with_team { team_time } else { alone_time };
                placement.stepped(with_team, Some(time));
                steps += 1;
            }
            assert_eq!(steps, trial_steps, "alternating, a warm-up each");
            let team = team_time < alone_time;
            match team {
                true => assert!(matches!(placement.mode, Mode::Team { .. })),
                false => assert!(matches!(placement.mode, Mode::Alone { .. })),
            }
            for _ in 0..next_interval - 1 {
                placement.stepped(team, None);
                assert!(!placement.on_trial());
            }
            placement.stepped(team, None);
        }
        assert!(placement.on_trial(), "the next trial is due");
        let mut alone = Placement::new(None);
        for _ in 0..10 {
            assert!(alone.team().is_none());
            alone.stepped(false, None);
        }
        assert!(!alone.on_trial(), "no helpers, no trial");
        // Confirmed again and again, the interval stops at the most.
        let mut placement = Placement::new(Some(Helpers::new(1).unwrap()));
        for _ in 0..20 {
            while placement.on_trial() {
                let with_team = placement.team().is_some();
                placement.stepped(with_team, Some(if with_team { 1.0 } else { 2.0 }));
            }
            while !placement.on_trial() {
                placement.stepped(true, None);
            }
        }
        assert_eq!(placement.interval, MOST_STEPS_BETWEEN_TRIALS);
    }

    /// Steps on a team with a helper thread (placed there whatever the
    /// trial would say), with the helper awake and asleep between steps:
    /// the same bits as a whole call on the caller's thread.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "too slow under Miri (helpers' own test covers their unsafe)"
    )]
    fn steps_with_helpers_awake_or_asleep_equal_a_whole_call() {
        let config = Config::builder(CellKind::Lstm, 16, 64)
            .num_layers(2)
            .build()
            .unwrap();
        let model = Model::random(config, 5);
        let (t_len, batch) = (6, 2);
        let x: Vec<f32> = (0..t_len * batch * 16)
            .map(|v| (v as f32 * 0.37).sin())
            .collect();
        let whole =
            crate::threads::run_inline(|| model.forward_inference(&Input::new(&x, t_len, batch)))
                .unwrap();
        let mut stream = model.stream(batch).unwrap();
        stream.core.placement = Placement {
            mode: Mode::Team { left: usize::MAX },
            ..Placement::new(Some(Helpers::new(1).unwrap()))
        };
        let mut y = Vec::new();
        for (t, step) in x.chunks_exact(batch * 16).enumerate() {
            if t % 2 == 1 {
                // Past any patience: the helper sleeps, the step runs on
                // the caller alone and wakes it.
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            y.extend_from_slice(stream.step(step).unwrap());
        }
        assert_eq!(y, whole.y);
        assert_eq!(stream.h(), &whole.h_n[..]);
        assert!(matches!(stream.core.placement.mode, Mode::Team { .. }));
    }
}

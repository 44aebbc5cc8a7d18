//! Optimisers over flat parameter vectors: SGD with momentum and Adam.
//!
//! Their state (moments, step count) saves into a checkpoint's extra
//! tensors with `state` and comes back with `restore`, so training resumes
//! where it stopped; the hyper-parameters are the caller's and are not saved.

use super::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use rayon::prelude::*;

/// Parameters per task where an optimiser's update is split over threads.
const PARALLEL_CHUNK: usize = 1 << 15;

/// A run of parameters, their gradients and Adam's two moments.
type AdamChunk<'a> = (((&'a mut [f32], &'a [f32]), &'a mut [f32]), &'a mut [f32]);

/// The extra tensor `{prefix}.{name}` of a checkpoint.
fn stored<'a>(checkpoint: &'a Checkpoint, prefix: &str, name: &str) -> Result<&'a [f32]> {
    checkpoint
        .extra(&format!("{prefix}.{name}"))
        .ok_or_else(|| Error::Checkpoint(format!("no optimiser state `{prefix}.{name}`")))
}

/// A step count as two f32 that hold its 16-bit halves exactly.
fn count_to_f32s(count: u32) -> Vec<f32> {
    vec![(count >> 16) as f32, (count & 0xffff) as f32]
}

fn count_from_f32s(values: &[f32], what: &str) -> Result<u32> {
    match values {
        [hi, lo] if (0.0..65536.0).contains(hi) && (0.0..65536.0).contains(lo) => {
            Ok(((*hi as u32) << 16) | *lo as u32)
        }
        _ => Err(Error::Checkpoint(format!("`{what}` is not a step count"))),
    }
}

/// SGD with (optional) momentum: `v = μ v + g; p -= lr v`.
#[derive(Clone, Debug)]
pub struct Sgd {
    /// Step size.
    pub learning_rate: f32,
    /// μ (0: plain SGD).
    pub momentum: f32,
    velocity: Vec<f32>,
}

impl Sgd {
    /// SGD with step `learning_rate` and momentum `momentum`.
    pub fn new(learning_rate: f32, momentum: f32) -> Self {
        Sgd {
            learning_rate,
            momentum,
            velocity: Vec::new(),
        }
    }

    /// One update of `params` with `grads` (same length on every call).
    pub fn step(&mut self, params: &mut [f32], grads: &[f32]) {
        assert_eq!(
            params.len(),
            grads.len(),
            "parameters and gradients differ in length"
        );
        self.velocity.resize(params.len(), 0.0);
        for ((p, g), v) in params.iter_mut().zip(grads).zip(&mut self.velocity) {
            *v = self.momentum * *v + g;
            *p -= self.learning_rate * *v;
        }
    }

    /// The velocity as the extra tensor `{prefix}.velocity`, for
    /// [`save`](super::save).
    pub fn state(&self, prefix: &str) -> Vec<(String, Vec<f32>)> {
        vec![(format!("{prefix}.velocity"), self.velocity.clone())]
    }

    /// Restores what [`Sgd::state`] saved under `prefix`.
    pub fn restore(&mut self, checkpoint: &Checkpoint, prefix: &str) -> Result<()> {
        self.velocity = stored(checkpoint, prefix, "velocity")?.to_vec();
        Ok(())
    }
}

/// Adam (Kingma & Ba), with bias correction.
#[derive(Clone, Debug)]
pub struct Adam {
    /// Step size (default 0.001).
    pub learning_rate: f32,
    /// Decay of the first moment (default 0.9).
    pub beta1: f32,
    /// Decay of the second moment (default 0.999).
    pub beta2: f32,
    /// Added to the second moment's root (default 1e-8).
    pub epsilon: f32,
    m: Vec<f32>,
    v: Vec<f32>,
    t: u32,
}

impl Adam {
    /// Adam with the usual β1 = 0.9, β2 = 0.999, ε = 1e-8.
    pub fn new(learning_rate: f32) -> Self {
        Adam {
            learning_rate,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            m: Vec::new(),
            v: Vec::new(),
            t: 0,
        }
    }

    /// One update of `params` with `grads` (same length on every call).
    pub fn step(&mut self, params: &mut [f32], grads: &[f32]) {
        assert_eq!(
            params.len(),
            grads.len(),
            "parameters and gradients differ in length"
        );
        self.m.resize(params.len(), 0.0);
        self.v.resize(params.len(), 0.0);
        self.t = self.t.saturating_add(1);
        // Past 2^31 steps the bias corrections are 1 to f32 precision.
        let t = i32::try_from(self.t).unwrap_or(i32::MAX);
        let c1 = 1.0 - self.beta1.powi(t);
        let c2 = 1.0 - self.beta2.powi(t);
        let (beta1, beta2, lr, eps) = (self.beta1, self.beta2, self.learning_rate, self.epsilon);
        let update = |(((p, g), m), v): AdamChunk| {
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
                *m = beta1 * *m + (1.0 - beta1) * g;
                *v = beta2 * *v + (1.0 - beta2) * g * g;
                *p -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
            }
        };
        // Element by element, so splitting it over librnn's threads (a
        // sqrt and two divisions per parameter: 0.5 ms for char_rnn's 333k)
        // changes no bit.
        let parallel = params.len() > PARALLEL_CHUNK
            && crate::threads::num_threads() > 1
            && crate::threads::on_pool(|| {
                params
                    .par_chunks_mut(PARALLEL_CHUNK)
                    .zip(grads.par_chunks(PARALLEL_CHUNK))
                    .zip(self.m.par_chunks_mut(PARALLEL_CHUNK))
                    .zip(self.v.par_chunks_mut(PARALLEL_CHUNK))
                    .for_each(update);
            })
            .is_ok();
        if !parallel {
            // (Also where librnn's pool could not be started.)
            update((((params, grads), &mut self.m[..]), &mut self.v[..]));
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u32 {
        self.t
    }

    /// The moments and step count as extra tensors `{prefix}.m`,
    /// `{prefix}.v` and `{prefix}.t`, for [`save`](super::save).
    pub fn state(&self, prefix: &str) -> Vec<(String, Vec<f32>)> {
        vec![
            (format!("{prefix}.m"), self.m.clone()),
            (format!("{prefix}.v"), self.v.clone()),
            (format!("{prefix}.t"), count_to_f32s(self.t)),
        ]
    }

    /// Restores what [`Adam::state`] saved under `prefix`: the next
    /// [`Adam::step`] continues exactly as it would have without the save.
    pub fn restore(&mut self, checkpoint: &Checkpoint, prefix: &str) -> Result<()> {
        let (m, v) = (
            stored(checkpoint, prefix, "m")?,
            stored(checkpoint, prefix, "v")?,
        );
        if m.len() != v.len() {
            return Err(Error::Checkpoint(format!(
                "the optimiser state `{prefix}` has moments of different lengths"
            )));
        }
        let t = count_from_f32s(stored(checkpoint, prefix, "t")?, &format!("{prefix}.t"))?;
        (self.m, self.v, self.t) = (m.to_vec(), v.to_vec(), t);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// Adam's formula element by element, also where the update is split
    /// over threads (more than one `PARALLEL_CHUNK`): the same bits on one
    /// and two threads.
    #[test]
    #[cfg_attr(miri, ignore = "too slow under Miri (100k parameters)")]
    fn adam_steps_the_same_on_any_thread_count() {
        let n = 3 * PARALLEL_CHUNK + 17;
        let grads = SplitMix64::new(4).uniform_vec(n, -1.0, 1.0);
        let start = SplitMix64::new(5).uniform_vec(n, -1.0, 1.0);
        let mut results = Vec::new();
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut params = start.clone();
            let mut adam = Adam::new(0.01);
            pool.install(|| {
                adam.step(&mut params, &grads);
                adam.step(&mut params, &grads);
            });
            results.push(params);
        }
        assert!(results[0]
            .iter()
            .zip(&results[1])
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        // Two steps of the same gradient g: m₂/c1 = g and v₂/c2 = g², so
        // each step moves a parameter by lr·g / (|g| + ε).
        for i in [0, PARALLEL_CHUNK, n - 1] {
            let (g, p0) = (grads[i], start[i]);
            let want = p0 - 2.0 * 0.01 * g / (g.abs() + 1e-8);
            assert!(
                (results[0][i] - want).abs() < 1e-5,
                "{i}: {} vs {want}",
                results[0][i]
            );
        }
    }
}

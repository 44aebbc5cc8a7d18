//! Optimisers over flat parameter vectors: SGD with momentum and Adam.

/// SGD with (optional) momentum: `v = μ v + g; p -= lr v`.
#[derive(Clone, Debug)]
pub struct Sgd {
    pub learning_rate: f32,
    pub momentum: f32,
    velocity: Vec<f32>,
}

impl Sgd {
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
}

/// Adam (Kingma & Ba), with bias correction.
#[derive(Clone, Debug)]
pub struct Adam {
    pub learning_rate: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
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
        let c1 = 1.0 - self.beta1.powi(self.t);
        let c2 = 1.0 - self.beta2.powi(self.t);
        for (((p, &g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            *m = self.beta1 * *m + (1.0 - self.beta1) * g;
            *v = self.beta2 * *v + (1.0 - self.beta2) * g * g;
            *p -= self.learning_rate * (*m / c1) / ((*v / c2).sqrt() + self.epsilon);
        }
    }
}

//! Choosing the instruction set once at run time.
//!
//! The best ISA the CPU supports is used unless the environment variable
//! `RNN_ISA` (`scalar`, `avx2`, `avx512`, `amx`, `neon`) names another; a model can
//! also be pinned to one with `Model::with_isa`. An ISA the CPU lacks is
//! never run: asking for it is an error.

use std::sync::OnceLock;

use super::fused::{BackParams, BackRow, BackStepRow, GateFns, MatRow, StepParams, StepRow};
use crate::config::{ActivationFunction, ActivationKind, CellKind, Config};
use crate::error::{Error, Result};
use crate::precision::Precision;

/// An instruction set with a kernel implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, one lane at a time.
    Scalar,
    /// x86-64 AVX2 with FMA, 8 lanes.
    Avx2,
    /// x86-64 AVX-512F and BW (every AVX-512 CPU but the Xeon Phi), 16
    /// lanes; int8 products use VNNI where the CPU has it.
    Avx512,
    /// AVX-512 with Intel AMX tiles (AMX-BF16 and AMX-INT8: Sapphire
    /// Rapids and later, on an OS that grants the tile state: Linux 5.16+):
    /// [`Isa::Avx512`]'s kernels, except that reduced-precision products run
    /// on AMX tiles. bf16: each state and input split into two bf16 parts
    /// (16 significant bits; see [`crate::Precision::Bf16`]); int8:
    /// `tdpbusd`, the same exact sums, so the same bits, as every ISA. f32
    /// models run exactly as on `Avx512`.
    Amx,
    /// AArch64 NEON, 4 lanes.
    Neon,
}

impl Isa {
    /// Every ISA librnn has kernels for (on any architecture).
    pub const ALL: [Isa; 5] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Amx, Isa::Neon];

    /// The name `RNN_ISA` takes: `scalar`, `avx2`, `avx512`, `amx` or `neon`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Amx => "amx",
            Isa::Neon => "neon",
        }
    }

    /// The ISA called `name` (any case).
    pub fn from_name(name: &str) -> Result<Isa> {
        Isa::ALL
            .into_iter()
            .find(|isa| isa.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown ISA {name:?}: expected scalar, avx2, avx512, amx or neon"
                ))
            })
    }

    /// Whether this CPU can run the ISA's kernels.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Amx => {
                Isa::Avx512.is_supported()
                    && is_x86_feature_detected!("avx512bf16")
                    && is_x86_feature_detected!("avx512vnni")
                    && super::amx::available()
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every ISA this CPU supports, scalar first.
    pub fn supported() -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .filter(|isa| isa.is_supported())
            .collect()
    }

    /// The fastest supported ISA.
    pub fn best() -> Isa {
        [Isa::Amx, Isa::Avx512, Isa::Avx2, Isa::Neon]
            .into_iter()
            .find(|isa| isa.is_supported())
            .unwrap_or(Isa::Scalar)
    }

    /// The ISA used by default: `RNN_ISA` if set (and supported), else
    /// [`Isa::best`]. Read once per process.
    pub fn selected() -> Result<Isa> {
        static SELECTED: OnceLock<Result<Isa>> = OnceLock::new();
        SELECTED
            .get_or_init(|| match std::env::var("RNN_ISA") {
                Ok(name) if !name.trim().is_empty() => {
                    let isa = Isa::from_name(&name)?;
                    if isa.is_supported() {
                        Ok(isa)
                    } else {
                        Err(Error::InvalidArgument(format!(
                            "RNN_ISA={name}: this CPU does not support {}",
                            isa.name()
                        )))
                    }
                }
                _ => Ok(Isa::best()),
            })
            .clone()
    }
}

/// Whether bf16 LSTM and GRU layers multiply rows rounded to bf16 with
/// the CPU's bf16 dot product (`vdpbf16ps` on AVX-512 BF16, `bfdot` on
/// NEON with the BF16 extension): the environment variable `RNN_BF16_DOT`,
/// read once per process. `auto` (or unset): where the CPU has the
/// instruction and issues it at least three quarters as often as an FMA,
/// measured once per process (about 1 ms); `on`: wherever the CPU has it;
/// `off`: never (every CPU then gives the widening kernels' bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bf16Dot {
    Auto,
    On,
    Off,
}

impl Bf16Dot {
    /// `RNN_BF16_DOT`'s value; an unknown one is an error naming it.
    pub fn selected() -> Result<Bf16Dot> {
        static SELECTED: OnceLock<Result<Bf16Dot>> = OnceLock::new();
        SELECTED
            .get_or_init(|| match std::env::var("RNN_BF16_DOT") {
                Err(_) => Ok(Bf16Dot::Auto),
                Ok(value) => match value.trim().to_ascii_lowercase().as_str() {
                    "" | "auto" => Ok(Bf16Dot::Auto),
                    "on" | "1" => Ok(Bf16Dot::On),
                    "off" | "0" => Ok(Bf16Dot::Off),
                    _ => Err(Error::InvalidArgument(format!(
                        "RNN_BF16_DOT={value:?}: expected auto, on or off"
                    ))),
                },
            })
            .clone()
    }
}

/// The smallest issue rate of a bf16 dot product instruction over that of
/// an f32 FMA at which rounded rows pay (the `RNN_BF16_DOT=auto` rule). A
/// bf16 dot product does the products of two FMAs, so at half the FMA
/// rate it breaks even before the rows' conversion; 0.75 asks for a clear
/// gain (1.5× the products per ns) before trading accuracy for it. Zen 4
/// (`vdpbf16ps` at 1.00) gains 1.6-2.1× at batch (BENCHMARKS.md); Sapphire
/// Rapids (0.28) lost.
pub(crate) const BF16_DOT_PAYING_RATE: f64 = 0.75;

impl Bf16Dot {
    /// `steps` (an ISA's kernels on its bf16 dot product instruction) where
    /// the CPU `has` the instruction and this mode chooses it: `on` always,
    /// `off` never, `auto` where `measure` (its issue rate over the FMA's)
    /// reaches [`BF16_DOT_PAYING_RATE`], measured once per process (a
    /// target architecture has one such instruction).
    pub fn pick(self, has: bool, measure: fn() -> f64, steps: StepKernels) -> Option<StepKernels> {
        static PAYS: OnceLock<bool> = OnceLock::new();
        // `measure` runs the instruction: only where the CPU has it.
        let chosen = has
            && match self {
                Bf16Dot::Off => false,
                Bf16Dot::On => true,
                Bf16Dot::Auto => *PAYS.get_or_init(|| measure() >= BF16_DOT_PAYING_RATE),
            };
        chosen.then_some(steps)
    }
}

/// Whether a bf16 model on `isa` rounds its LSTM and GRU layers' rows
/// (inputs and states) to bf16 and multiplies them with `vdpbf16ps`,
/// rather than widening the weights to f32 (see [`crate::Precision::Bf16`]
/// and `RNN_BF16_DOT`). [`Isa::Avx512`] does on a CPU with AVX-512 BF16
/// (`vdpbf16ps`), [`Isa::Neon`] on one with the BF16 extension (`bfdot`),
/// where it pays; vanilla RNN layers never do.
pub fn bf16_rounds_rows(isa: Isa) -> Result<bool> {
    Ok(Kernels::for_isa(isa)?.table.bf16_rounded.is_some())
}

/// The issue rate of the bf16 dot product instruction (`vdpbf16ps`,
/// `bfdot`) over that of an FMA on this core, as the `RNN_BF16_DOT=auto`
/// rule measures it (about 1 ms): `None` on a CPU without one.
pub fn measure_bf16_dot_rate() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if Isa::Avx512.is_supported() {
        return super::avx512::bf16_dot::measured_rate();
    }
    #[cfg(target_arch = "aarch64")]
    if Isa::Neon.is_supported() {
        return super::neon::bf16_dot::measured_rate();
    }
    None
}

/// An activation function (or its derivative from the function's value)
/// over a slice, in place.
pub(crate) type ActivationMap = unsafe fn(&ActivationFunction, &mut [f32]);

/// `k, packed, dy_width, params, rows`: see `fused::lstm_backward_step`.
pub(crate) type BackStep = unsafe fn(usize, &[f32], usize, &BackParams, &[BackStepRow]);

/// `panel_matmul(k, n_padded, packed, bias, rows)`, see `fused::panel_matmul`.
pub(crate) type PanelMatmul = unsafe fn(usize, usize, &[f32], Option<&[f32]>, &[MatRow]);

/// How a weight format converts the rows it multiplies (int8: quantised
/// rows; bf16 on `vdpbf16ps`: rows rounded to bf16 pairs).
#[derive(Clone, Copy)]
pub(crate) struct RowConversion {
    /// Words a converted row of `k` values takes.
    pub words: fn(usize) -> usize,
    /// `convert(x, out)`: the row `x` into at least `words(x.len())` words.
    pub convert: unsafe fn(&[f32], &mut [f32]),
}

/// The kernels that multiply packed weights, for one weight format: the
/// fused step of each cell and the plain panel product (the input
/// projection, the LSTM projection; f32 also backward's per-step products).
#[derive(Clone, Copy)]
pub(crate) struct StepKernels {
    pub lstm_step: unsafe fn(&StepParams, &[StepRow]),
    pub gru_step: unsafe fn(&StepParams, &[StepRow]),
    pub rnn_step: unsafe fn(&StepParams, &[StepRow]),
    pub panel_matmul: PanelMatmul,
    /// Whether `lstm_step` reads its four-gate panels in halves
    /// (`fused::pairs_apart`): the packing lays them out so.
    pub lstm_pairs_apart: bool,
    /// Where the format multiplies converted rows rather than f32 ones:
    /// the callers convert each row (state, input) once before the
    /// products read it, and hand the kernels the copy (`StepRow::h_prev_q`,
    /// `MatRow::a`).
    pub rows: Option<RowConversion>,
}

impl RowConversion {
    /// Converts `x` into `out`.
    ///
    /// # Panics
    /// If `out` is shorter than a converted row.
    pub fn convert_row(&self, x: &[f32], out: &mut [f32]) {
        assert!(
            out.len() >= (self.words)(x.len()),
            "room for a converted row"
        );
        // SAFETY: a RowConversion comes from a StepKernels, which is only
        // handed out for a supported ISA (Kernels::for_isa); the conversion
        // writes inside `out`, checked.
        unsafe { (self.convert)(x, out) }
    }
}

/// See `kernels::transpose::Columns`.
pub(crate) type TransposeColumns = unsafe fn(crate::kernels::transpose::Columns<'_>);

/// The kernels of one ISA, as function pointers. Only [`Kernels::for_isa`]
/// hands them out, after checking the CPU supports the ISA.
#[derive(Clone, Copy)]
pub(crate) struct Table {
    pub unit: usize,
    /// Vectors per gate in a panel (`Simd::W`).
    pub vectors_per_gate: usize,
    pub fma_chains: unsafe fn(usize) -> f32,
    pub tanh_in_place: unsafe fn(&mut [f32]),
    pub sigmoid_in_place: unsafe fn(&mut [f32]),
    /// `activation::apply_in_place` and `derivative_in_place`.
    pub activation_in_place: ActivationMap,
    pub activation_derivative_in_place: ActivationMap,
    /// `math::softmax_in_place` (attention's weights).
    pub softmax_in_place: unsafe fn(&mut [f32]),
    /// `transpose::columns`: gradient columns transposed, with their sums.
    pub transpose_columns: TransposeColumns,
    /// Per weight format ([`Kernels::steps`]).
    pub f32: StepKernels,
    pub bf16: StepKernels,
    /// bf16 for a batch of one: the widening kernels, also where `bf16`
    /// runs on AMX tiles (see [`Kernels::layer_steps`]).
    pub bf16_one_row: StepKernels,
    pub int8: StepKernels,
    /// int8 for a batch of one: the register kernels, also where `int8`
    /// runs on AMX tiles (the same bits: the sums are exact).
    pub int8_one_row: StepKernels,
    /// bf16 with the rows rounded to bf16 too (`vdpbf16ps`), where the CPU
    /// has it and it pays ([`bf16_rounds_rows`]): LSTM and GRU run it at
    /// every batch instead of `bf16` and `bf16_one_row`.
    pub bf16_rounded: Option<StepKernels>,
    /// `blocked_matmul(k, n, packed, rows, accumulate)`, see
    /// `fused::blocked_matmul`: the backward's products over all steps.
    pub blocked_matmul: unsafe fn(usize, usize, &[f32], &[MatRow], bool),
    pub lstm_backward: unsafe fn(&BackParams, &[BackRow]),
    /// `lstm_backward_step(k, r_back_panels, dy_width, params, rows)`: a
    /// backward step's `dG × Rᵀ` with the element-wise backward of the
    /// step before it in its epilogue (`fused::BackStepRow`).
    pub lstm_backward_step: BackStep,
    /// The same for a vanilla RNN.
    pub rnn_backward_step: BackStep,
    /// GRU: `d_rn × Rn` with phase B of the same step, and `[dr, dz] ×
    /// R_rz` with phase A of the step before.
    pub gru_backward_b_step: BackStep,
    pub gru_backward_a_step: BackStep,
    pub gru_backward_a: unsafe fn(&BackParams, &[BackRow]),
    pub gru_backward_b: unsafe fn(&BackParams, &[BackRow]),
    pub rnn_backward: unsafe fn(&BackParams, &[BackRow]),
}

/// A kernel table for an ISA this CPU supports.
#[derive(Clone, Copy)]
pub(crate) struct Kernels {
    pub isa: Isa,
    pub table: Table,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kernels({})", self.isa.name())
    }
}

impl Kernels {
    pub fn for_isa(isa: Isa) -> Result<Kernels> {
        if !isa.is_supported() {
            return Err(Error::InvalidArgument(format!(
                "this CPU does not support the {} kernels",
                isa.name()
            )));
        }
        // An unknown RNN_BF16_DOT is an error on every CPU, as RNN_ISA's;
        // so is a bad RNN_MIN_PART_MACS, which every call reads too.
        let bf16_dot = Bf16Dot::selected()?;
        crate::engine::split_cost::selected_min_part()?;
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let _ = bf16_dot;
        let table = match isa {
            Isa::Scalar => super::scalar::entry::TABLE,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => super::avx2::table(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => super::avx512::table(bf16_dot),
            #[cfg(target_arch = "x86_64")]
            Isa::Amx => super::avx512::amx_table().expect("is_supported checked AMX"),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => super::neon::table(bf16_dot),
            #[allow(unreachable_patterns)]
            _ => unreachable!("is_supported is false for ISAs of other architectures"),
        };
        Ok(Kernels { isa, table })
    }

    /// The kernels over weights packed in `precision`.
    pub fn steps(&self, precision: Precision) -> &StepKernels {
        match precision {
            Precision::F32 => &self.table.f32,
            Precision::Bf16 => &self.table.bf16,
            Precision::Int8 => &self.table.int8,
        }
    }

    /// The kernels of a layer's products (input projection and steps) in
    /// a call over `batch` items. Those of [`Kernels::steps`], but for a
    /// batch of one on AMX, which runs on the register kernels (bf16
    /// widening, int8 VNNI). A tile product of one row takes about half the
    /// time of a full 16-row one (measured), as long as that row's FMAs (or
    /// `vpdpbusd`s) in registers, and every call adds staging and a tile
    /// configuration; from two rows the tiles do twice that work in the
    /// time. A whole call's input projection at batch one would still gain
    /// from tiles (its rows are the steps: 1.1-1.35× measured), but a
    /// stream projects one row per step, where tiles cost 18 % more per
    /// step (LSTM H = 256): one rule for the whole layer keeps a stream's
    /// bits equal to a call's. The choice follows the call's batch, not a
    /// split's rows, so bf16's bits do not depend on the thread count;
    /// int8's are the same either way.
    ///
    /// bf16 LSTM and GRU layers run `bf16_rounded` where the table has it
    /// (see [`bf16_rounds_rows`]), at every batch, so a stream's bits
    /// equal a call's there too; a vanilla RNN keeps its rows in f32: with
    /// them rounded its outputs reached 1.01e-2 of f32's (measured),
    /// beyond the 1e-2 bf16 promises.
    pub fn layer_steps(&self, precision: Precision, batch: usize, cell: CellKind) -> &StepKernels {
        match (precision, &self.table.bf16_rounded) {
            (Precision::Bf16, Some(rounded)) if cell != CellKind::Rnn => rounded,
            _ => self.batch_steps(precision, batch),
        }
    }

    /// [`Kernels::layer_steps`] for rows kept in f32.
    fn batch_steps(&self, precision: Precision, batch: usize) -> &StepKernels {
        match precision {
            Precision::Bf16 if batch < 2 => &self.table.bf16_one_row,
            Precision::Int8 if batch < 2 => &self.table.int8_one_row,
            _ => self.steps(precision),
        }
    }

    /// Hidden units per weight panel; hidden sizes are padded to a multiple.
    pub fn unit(&self) -> usize {
        self.table.unit
    }

    /// f32 lanes of this ISA's vectors: the multiply-adds of one FMA.
    pub fn lanes(&self) -> usize {
        self.table.unit / self.table.vectors_per_gate
    }

    /// Panels that fill a single row's widest register tile, for panels of
    /// `gates` gates (see `fused::run_panels`): a share of a step should be
    /// a multiple of this, or its last tile runs with fewer FMA chains.
    pub fn tile_panels(&self, gates: usize) -> usize {
        8usize.div_ceil(self.table.vectors_per_gate * gates).max(1)
    }

    pub fn tanh_in_place(&self, x: &mut [f32]) {
        // SAFETY: `for_isa` checked the CPU supports this table's ISA.
        unsafe { (self.table.tanh_in_place)(x) }
    }

    pub fn sigmoid_in_place(&self, x: &mut [f32]) {
        // SAFETY: as above.
        unsafe { (self.table.sigmoid_in_place)(x) }
    }

    /// Direction `dir`'s activation functions of `config` for the fused
    /// kernels: which roles run a function other than their default (out
    /// of line, through this ISA's vectorised maps).
    pub fn gate_fns(&self, config: &Config, dir: usize) -> GateFns {
        let cell = config.cell();
        let defaults = cell.default_activations();
        let mut fns = GateFns {
            fns: [ActivationFunction::new(ActivationKind::Tanh); 3],
            custom: [false; 3],
            relu: false,
            apply: self.table.activation_in_place,
            derive: self.table.activation_derivative_in_place,
        };
        for (role, f) in config.activations(dir).iter().enumerate() {
            fns.fns[role] = *f;
            let rnn_relu = cell == CellKind::Rnn && f.kind == ActivationKind::Relu;
            fns.relu |= rnn_relu;
            fns.custom[role] = f.kind != defaults[role] && !rnn_relu;
        }
        fns
    }

    /// Softmax of `row` in place, stable (see `math::softmax_in_place`).
    pub fn softmax_in_place(&self, row: &mut [f32]) {
        // SAFETY: `for_isa` checked the CPU supports this table's ISA.
        unsafe { (self.table.softmax_in_place)(row) }
    }
}

/// Vectorised tanh of every element, in place, with the kernels of `isa`
/// (error bound: [`crate::kernels::math::MAX_ULP`]).
pub fn tanh_in_place(isa: Isa, x: &mut [f32]) -> Result<()> {
    Kernels::for_isa(isa).map(|k| k.tanh_in_place(x))
}

/// Vectorised logistic function of every element, in place.
pub fn sigmoid_in_place(isa: Isa, x: &mut [f32]) -> Result<()> {
    Kernels::for_isa(isa).map(|k| k.sigmoid_in_place(x))
}

/// `f` of every element, in place, vectorised with the kernels of `isa`
/// (as the fused kernels run a gate's non-default function).
pub fn activation_in_place(isa: Isa, f: &ActivationFunction, x: &mut [f32]) -> Result<()> {
    let k = Kernels::for_isa(isa)?;
    // SAFETY: `for_isa` checked the CPU supports this table's ISA.
    unsafe { (k.table.activation_in_place)(f, x) };
    Ok(())
}

/// `f'(x)` of every element from `y = f(x)`, in place (as the backward
/// pass computes it from the stored gate values).
pub fn activation_derivative_in_place(
    isa: Isa,
    f: &ActivationFunction,
    y: &mut [f32],
) -> Result<()> {
    let k = Kernels::for_isa(isa)?;
    // SAFETY: `for_isa` checked the CPU supports this table's ISA.
    unsafe { (k.table.activation_derivative_in_place)(f, y) };
    Ok(())
}

/// Measures this core's peak f32 FMA throughput with `isa`'s vectors, in
/// GFLOP/s (2 FLOPs per lane per FMA), over about `seconds` of run time.
pub fn measure_fma_peak(isa: Isa, seconds: f64) -> Result<f64> {
    let kernels = Kernels::for_isa(isa)?;
    let lanes = kernels.lanes() as f64;
    let chains = if matches!(isa, Isa::Avx512 | Isa::Amx | Isa::Neon) {
        24.0
    } else {
        12.0
    };
    let mut iters = 1usize << 16;
    loop {
        let start = std::time::Instant::now();
        // SAFETY: `for_isa` checked the CPU supports this table's ISA.
        let sink = unsafe { (kernels.table.fma_chains)(iters) };
        let elapsed = start.elapsed().as_secs_f64();
        std::hint::black_box(sink);
        if elapsed >= seconds || iters >= 1 << 40 {
            return Ok(iters as f64 * chains * lanes * 2.0 / elapsed / 1e9);
        }
        iters *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Kernels::lanes` (what the FMA peak and the projection's fork bound
    /// count with) is each ISA's vector width in f32 lanes.
    #[test]
    fn every_isa_reports_its_vector_lanes() {
        for isa in Isa::ALL {
            let Ok(kernels) = Kernels::for_isa(isa) else {
                continue;
            };
            let lanes = match isa {
                Isa::Scalar => 1,
                Isa::Avx2 => 8,
                Isa::Avx512 | Isa::Amx => 16,
                Isa::Neon => 4,
            };
            assert_eq!(kernels.lanes(), lanes, "{isa:?}");
        }
    }
}

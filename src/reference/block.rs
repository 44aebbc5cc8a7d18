//! Views of one (layer, direction) block of the flat parameter vector.

use crate::config::{Config, ParamKind};

/// The tensors of one layer and direction (see [`ParamKind`] for shapes).
pub(super) struct Block<S> {
    pub w: S,
    pub r: S,
    pub wb: S,
    pub rb: S,
    pub peephole: Option<S>,
    pub proj: Option<S>,
}

fn len(config: &Config, layer: usize, kind: ParamKind) -> usize {
    config
        .param_shape(layer, kind)
        .map_or(0, |(rows, cols)| rows * cols)
}

pub(super) fn block<'a>(
    config: &Config,
    params: &'a [f64],
    layer: usize,
    dir: usize,
) -> Block<&'a [f64]> {
    let mut rest = &params[config.block_range_unchecked(layer, dir)];
    let mut take = |kind| {
        let (head, tail) = rest.split_at(len(config, layer, kind));
        rest = tail;
        head
    };
    let (w, r, wb, rb) = (
        take(ParamKind::W),
        take(ParamKind::R),
        take(ParamKind::Wb),
        take(ParamKind::Rb),
    );
    let peephole = take(ParamKind::Peephole);
    let proj = take(ParamKind::Projection);
    Block {
        w,
        r,
        wb,
        rb,
        peephole: config.peepholes().then_some(peephole),
        proj: (config.proj_size() > 0).then_some(proj),
    }
}

pub(super) fn block_mut<'a>(
    config: &Config,
    params: &'a mut [f64],
    layer: usize,
    dir: usize,
) -> Block<&'a mut [f64]> {
    let mut rest = &mut params[config.block_range_unchecked(layer, dir)];
    let mut take = |kind| {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(len(config, layer, kind));
        rest = tail;
        head
    };
    let (w, r, wb, rb) = (
        take(ParamKind::W),
        take(ParamKind::R),
        take(ParamKind::Wb),
        take(ParamKind::Rb),
    );
    let peephole = take(ParamKind::Peephole);
    let proj = take(ParamKind::Projection);
    Block {
        w,
        r,
        wb,
        rb,
        peephole: config.peepholes().then_some(peephole),
        proj: (config.proj_size() > 0).then_some(proj),
    }
}

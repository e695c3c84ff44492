//! The neuron edit: silence MLP neurons by zeroing their weights in the flat parameter buffer, so
//! the edited model is an ordinary checkpoint (tinymem.md §5.4, depn-attention.md §A4).

use crate::error::{Error, Result};
use crate::model::config::ModelConfig;
use crate::model::params::{ParamKind, ParamLayout};

/// Which weights an edit zeroes; both make the neuron's contribution 0 at every position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EditMode {
    /// Column k of `mlp.c_fc.weight` and `c_fc.bias[k]`: pre-activation 0, and act(0) = 0 for
    /// relu, gelu and gelu_new (TinyMem's `apply_ablation_mask_to_base_model`).
    FcColumn,
    /// Row k of `mlp.c_proj.weight` [4C, C]: the neuron's output is dropped (DEPN's edit).
    ProjRow,
}

/// Zero the given (layer, neuron) pairs in `params` (laid out by `cfg`). Errors name the first
/// pair outside the model; nothing is changed then.
pub fn zero_neurons(params: &mut [f32], cfg: &ModelConfig, neurons: &[(usize, usize)], mode: EditMode) -> Result<()> {
    let layout = ParamLayout::new(cfg);
    if params.len() != layout.total {
        return Err(Error::Input(format!("{} parameters do not fit a model of {}", params.len(), layout.total)));
    }
    let (c, f) = (cfg.n_embd, cfg.n_inner());
    if let Some(&(l, k)) = neurons.iter().find(|&&(l, k)| l >= cfg.n_layer || k >= f) {
        return Err(Error::Input(format!("neuron ({l}, {k}) is outside a model of {} layers × {f} MLP neurons", cfg.n_layer)));
    }
    for &(l, k) in neurons {
        match mode {
            EditMode::FcColumn => {
                let w = layout.offset(ParamKind::FcW, l);
                for i in 0..c {
                    params[w + i * f + k] = 0.0;
                }
                params[layout.offset(ParamKind::FcB, l) + k] = 0.0;
            }
            EditMode::ProjRow => {
                let w = layout.offset(ParamKind::FcProjW, l) + k * c;
                params[w..w + c].fill(0.0);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_touch_exactly_the_neurons_weights() {
        let cfg = ModelConfig::tinymem_math(2);
        let layout = ParamLayout::new(&cfg);
        let base: Vec<f32> = (0..layout.total).map(|i| 1.0 + i as f32).collect();
        let (c, f) = (cfg.n_embd, cfg.n_inner());
        for mode in [EditMode::FcColumn, EditMode::ProjRow] {
            let mut p = base.clone();
            zero_neurons(&mut p, &cfg, &[(1, 7), (0, 511)], mode).unwrap();
            let mut expect = std::collections::HashSet::new();
            for (l, k) in [(1usize, 7usize), (0, 511)] {
                match mode {
                    EditMode::FcColumn => {
                        expect.extend((0..c).map(|i| layout.offset(ParamKind::FcW, l) + i * f + k));
                        expect.insert(layout.offset(ParamKind::FcB, l) + k);
                    }
                    EditMode::ProjRow => expect.extend((0..c).map(|i| layout.offset(ParamKind::FcProjW, l) + k * c + i)),
                }
            }
            for (i, (&a, &b)) in p.iter().zip(&base).enumerate() {
                assert_eq!(a, if expect.contains(&i) { 0.0 } else { b }, "{mode:?} index {i}");
            }
            let mut q = base.clone();
            assert!(zero_neurons(&mut q, &cfg, &[(0, 1), (2, 0)], mode).unwrap_err().to_string().contains("(2, 0)"));
            assert_eq!(q, base, "a bad edit changes nothing");
        }
    }
}

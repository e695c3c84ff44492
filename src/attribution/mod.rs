//! Localizing memorization inside a model (tinymem.md §5.4, depn-attention.md Part A).
//!
//! This module holds the model-independent parts: the integrated-gradients Riemann grids and the
//! DEPN detector and aggregator over per-(layer, neuron) score matrices ([`depn`]), exposure of
//! planted secrets ([`exposure`]), and the neuron edit on the flat parameter buffer ([`edit`]).

pub mod depn;
pub mod edit;
pub mod exposure;
pub mod ig;
pub mod masks;
pub mod methods;

use crate::error::{Error, Result};

/// One score per (layer, MLP neuron), row-major [layer][neuron].
#[derive(Clone, Debug, PartialEq)]
pub struct NeuronScores {
    pub layers: usize,
    pub width: usize,
    pub values: Vec<f64>,
}

impl NeuronScores {
    pub fn zeros(layers: usize, width: usize) -> Self {
        NeuronScores { layers, width, values: vec![0.0; layers * width] }
    }

    pub fn new(layers: usize, width: usize, values: Vec<f64>) -> Result<Self> {
        if values.len() != layers * width {
            return Err(Error::Input(format!("{} neuron scores are not {layers} layers × {width}", values.len())));
        }
        Ok(NeuronScores { layers, width, values })
    }

    pub fn get(&self, layer: usize, neuron: usize) -> f64 {
        self.values[layer * self.width + neuron]
    }

    /// self += other (the same shape).
    pub fn add(&mut self, other: &NeuronScores) -> Result<()> {
        if (self.layers, self.width) != (other.layers, other.width) {
            return Err(Error::Input(format!("cannot add {}×{} scores to {}×{}", other.layers, other.width, self.layers, self.width)));
        }
        for (a, b) in self.values.iter_mut().zip(&other.values) {
            *a += b;
        }
        Ok(())
    }

    /// The k highest-scoring neurons of every layer (TinyMem's per-layer ablation, k = ⌊width·ratio⌋),
    /// as (layer, neuron); ties go to the lower neuron index; NaN scores are never selected.
    pub fn top_k_per_layer(&self, k: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for l in 0..self.layers {
            let row = &self.values[l * self.width..(l + 1) * self.width];
            let mut order: Vec<usize> = (0..self.width).filter(|&i| !row[i].is_nan()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            out.extend(order.into_iter().take(k).map(|i| (l, i)));
        }
        out
    }
}

/// k = ⌊width · ratio⌋ (tinymem.md §5.4: k = 0 when the ratio is below 1/width).
pub fn per_layer_count(width: usize, ratio: f64) -> Result<usize> {
    if !(0.0..=1.0).contains(&ratio) {
        return Err(Error::Input(format!("ablation ratio must be in [0, 1], not {ratio}")));
    }
    Ok((width as f64 * ratio).floor() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_per_layer_breaks_ties_by_index_and_skips_nan() {
        let s = NeuronScores::new(2, 4, vec![0.5, 2.0, 2.0, f64::NAN, -1.0, 0.0, 3.0, 0.0]).unwrap();
        assert_eq!(s.top_k_per_layer(2), vec![(0, 1), (0, 2), (1, 2), (1, 1)]);
        assert_eq!(s.top_k_per_layer(0), vec![]);
        assert_eq!(per_layer_count(512, 1e-3).unwrap(), 0);
        assert_eq!(per_layer_count(512, 0.01).unwrap(), 5);
        assert!(per_layer_count(512, 1.5).is_err());
        assert!(NeuronScores::new(2, 3, vec![0.0; 5]).is_err());
    }
}

//! Sliced mutual information screening (smi.md): random-projection slicing, per-sample pointwise
//! sliced MI (PSMI, Gaussian per class and slice) and the dataset-level SMI with scikit-learn's
//! 1-D KSG/Ross estimator.
//!
//! Each step is its own function over plain arrays (directions → projection → per-class statistics →
//! scoring → per-row aggregation; sort → radii → counts → ψ for KSG) so GPU kernels can mirror them
//! one to one. This is the cpu implementation (rayon).

pub mod directions;
pub mod input;
pub mod extract;
pub mod ksg;
pub mod lira;
pub mod mt19937;
pub mod npy;
pub mod pipeline;
pub mod project;
pub mod project_bf16;
pub mod psmi;
pub mod shard;
pub mod roc;
pub mod stats;
pub mod vmath;

pub use directions::Directions;
pub use ksg::{ksg_mi_columns, KsgOptions};
pub use psmi::{psmi, psmi_auto, psmi_auto_of, psmi_of, AutoOptions, Ddof, PsmiOptions, PsmiScores};
pub use stats::{quantile_linear, Summary};

use crate::error::{Error, Result};

/// Labels mapped to dense class indices 0..C (sorted by label value, as `np.unique`).
#[derive(Clone, Debug)]
pub struct Classes {
    /// Label value of each class.
    pub values: Vec<i64>,
    /// Class index of each sample.
    pub of_sample: Vec<u32>,
    /// Samples per class.
    pub counts: Vec<usize>,
}

impl Classes {
    pub fn new(labels: &[i64]) -> Result<Classes> {
        if labels.is_empty() {
            return Err(Error::Input("no labels".into()));
        }
        let mut values = labels.to_vec();
        values.sort_unstable();
        values.dedup();
        if values.len() > u32::MAX as usize {
            return Err(Error::Input("too many classes".into()));
        }
        let mut counts = vec![0usize; values.len()];
        let of_sample = labels
            .iter()
            .map(|l| {
                let c = values.binary_search(l).expect("label is among the unique values");
                counts[c] += 1;
                c as u32
            })
            .collect();
        Ok(Classes { values, of_sample, counts })
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn samples(&self) -> usize {
        self.of_sample.len()
    }

    /// PSMI fits a Gaussian per class: every class needs ≥ 2 samples (the references raise too).
    pub fn require_two_per_class(&self) -> Result<()> {
        let small: Vec<String> = self
            .values
            .iter()
            .zip(&self.counts)
            .filter(|(_, &c)| c < 2)
            .map(|(v, c)| format!("label {v} ({c} sample)"))
            .collect();
        if small.is_empty() {
            Ok(())
        } else {
            Err(Error::Input(format!("PSMI needs at least 2 samples per class; too few: {}", small.join(", "))))
        }
    }
}

/// Features must be finite: one NaN would poison every statistic of its class.
pub fn check_features<T: project::ProjElem>(x: &[T], n: usize, d: usize) -> Result<()> {
    if n == 0 || d == 0 {
        return Err(Error::Input(format!("empty feature matrix ({n} × {d})")));
    }
    if x.len() != n * d {
        return Err(Error::Input(format!("feature matrix holds {} values, not {n} × {d}", x.len())));
    }
    if let Some(pos) = x.iter().position(|v| !v.to_f64().is_finite()) {
        return Err(Error::Input(format!("feature [{}, {}] is NaN or infinite", pos / d, pos % d)));
    }
    Ok(())
}

/// Labels and features must describe the same samples.
pub fn check_counts(n_features: usize, n_labels: usize) -> Result<()> {
    if n_features != n_labels {
        return Err(Error::Input(format!("{n_features} feature rows but {n_labels} labels")));
    }
    Ok(())
}

//! Analyses of a trained model's internals that are neither screening (src/smi) nor neuron
//! localization (src/attribution): `attention` summarises its attention distributions
//! (depn-attention.md B3).

pub mod attention;

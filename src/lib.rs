//! memsieve: find and remove training-data memorization in small language models.

pub mod analysis;
pub mod attribution;
pub mod backend;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod bench;
pub mod experiment;
pub mod finetune;
pub mod machine;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod regularize;
pub mod rng;
pub mod smi;
pub mod train;
pub mod unlearn;

pub use error::{Error, Result};
pub mod cli;

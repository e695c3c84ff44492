//! memsieve: find and remove training-data memorization in small language models.

pub mod checkpoint;
pub mod error;
pub mod model;
pub mod rng;

pub use error::{Error, Result};
pub mod backend;
pub mod metrics;
pub mod train;

//! memsieve: find and remove training-data memorization in small language models.

pub mod data;
pub mod error;
pub mod model;
pub mod rng;

pub use error::{Error, Result};

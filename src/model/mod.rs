//! The TinyMem model (GPT-2 pre-LN decoder) written once over the `Backend` trait.

pub mod config;
pub mod params;

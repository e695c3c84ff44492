//! `memsieve data`: write a TinyMem dataset as JSONL token rows plus its description.

use super::train::MathDataArgs;
use crate::data::MathDataset;
use crate::error::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct DataArgs {
    /// Output directory: data.json, train.jsonl, noisy.jsonl, clean_for_noisy.jsonl, test-*.jsonl.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub data: MathDataArgs,
}

pub fn run(a: DataArgs) -> Result<()> {
    let cfg = a.data.config()?;
    let d = MathDataset::generate(&cfg)?;
    super::write_json(&a.out.join("data.json"), &cfg)?;
    crate::data::save_jsonl(a.out.join("train.jsonl"), &d.train, None)?;
    crate::data::save_jsonl(a.out.join("noisy.jsonl"), &d.noisy, None)?;
    crate::data::save_jsonl(a.out.join("clean_for_noisy.jsonl"), &d.clean_for_noisy, None)?;
    for set in &d.test_sets {
        crate::data::save_jsonl(a.out.join(format!("test-{}.jsonl", set.name)), &set.tokens, None)?;
    }
    println!("{}", d.summary());
    println!("wrote {}", a.out.display());
    Ok(())
}

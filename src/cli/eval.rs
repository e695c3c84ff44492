//! `memsieve eval`: metrics of a saved model on a TinyMem data description or a JSONL token file.

use super::report;
use super::Context;
use crate::checkpoint;
use crate::data::{MathDataConfig, MathDataset};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::metrics::MemWindow;
use crate::model::Model;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct EvalArgs {
    /// Model directory (ours, or written by transformers' save_pretrained).
    #[arg(long)]
    pub model: PathBuf,
    /// data.json (a TinyMem data description, as `train` and `data` write) or a JSONL token file.
    /// Default: the data.json beside the model.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Prompt length of the memorization test.
    #[arg(long, default_value_t = 50)]
    pub prompt_len: usize,
    /// Continuation length compared in the memorization test.
    #[arg(long, default_value_t = 50)]
    pub k: usize,
}

pub fn run(ctx: &Context, a: EvalArgs) -> Result<()> {
    super::on_device!(ctx, |dev| run_on(dev, a))
}

fn run_on<B: Backend>(dev: &std::sync::Arc<crate::backend::Device<B>>, a: EvalArgs) -> Result<()> {
    let (cfg, params) = checkpoint::load_model(&a.model)?;
    let mut model = Model::from_params(dev.clone(), cfg.clone(), &params)?;
    let data_path = match &a.data {
        Some(p) => p.clone(),
        None => {
            let beside = if a.model.is_dir() { a.model.join("data.json") } else { a.model.with_file_name("data.json") };
            if !beside.exists() {
                return Err(Error::Input(format!("no --data given and no {} beside the model", beside.display())));
            }
            beside
        }
    };
    let is_jsonl = data_path.extension().is_some_and(|e| e == "jsonl");
    let value = if is_jsonl {
        let pad = cfg.pad_token_id.unwrap_or(0);
        let rows = crate::data::load_jsonl(&data_path, cfg.vocab_size, cfg.n_positions, pad)?;
        let q = report::evaluate_tokens(&mut model, &rows.tokens, a.batch)?;
        println!("{:<10} {:>9} {:>9} {:>10} {:>11}", "rows", "loss", "acc %", "acc¬pad %", "perplexity");
        println!(
            "{:<10} {:>9.4} {:>9.2} {:>10.2} {:>11.3}",
            q.rows,
            q.loss,
            100.0 * q.accuracy,
            100.0 * q.accuracy_no_pad,
            q.perplexity
        );
        serde_json::to_value(&q).unwrap()
    } else {
        let text = std::fs::read_to_string(&data_path).map_err(|e| Error::io(&data_path, e))?;
        let dcfg: MathDataConfig = serde_json::from_str(&text)
            .map_err(|e| Error::Data(format!("{} is not a TinyMem data description: {e}", data_path.display())))?;
        dcfg.validate()?;
        if dcfg.max_ctx > cfg.n_positions {
            return Err(Error::Input(format!(
                "the data's context {} is longer than the model's {}",
                dcfg.max_ctx, cfg.n_positions
            )));
        }
        let data = MathDataset::generate(&dcfg)?;
        let window = MemWindow { prompt_len: a.prompt_len, k: a.k, batch: a.batch };
        let r = report::evaluate(&mut model, &data, &window, a.batch)?;
        report::print(&r);
        serde_json::to_value(&r).unwrap()
    };
    if let Some(p) = &a.json {
        super::write_json(p, &value)?;
    }
    Ok(())
}

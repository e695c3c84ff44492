//! `memsieve eval`: metrics of a saved model on a TinyMem data description or a JSONL token file.

use super::report;
use super::Context;
use crate::checkpoint;
use crate::backend::Backend;
use crate::error::Result;
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
    let value = match super::load_eval_data(&a.model, a.data.as_deref(), &cfg)? {
        super::EvalData::Rows(rows) => {
            let q = report::evaluate_tokens(&mut model, &rows, a.batch)?;
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
        }
        super::EvalData::Math(data) => {
            let window = MemWindow { prompt_len: a.prompt_len, k: a.k, batch: a.batch };
            let r = report::evaluate(&mut model, &data, &window, a.batch)?;
            report::print(&r);
            serde_json::to_value(&r).unwrap()
        }
    };
    if let Some(p) = &a.json {
        super::write_json(p, &value)?;
    }
    Ok(())
}

//! `memsieve generate`: greedy continuation of prompts with a saved model.

use super::Context;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::generate::GenerateOptions;
use crate::model::Model;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct GenerateArgs {
    /// Model directory (config.json + model.safetensors), ours or from `save_pretrained`.
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt as token ids, comma-separated (e.g. 10,1,7,12).
    #[arg(long, conflicts_with = "text")]
    pub tokens: Option<String>,
    /// Prompt as TinyMem math text (e.g. "^7 14 21"), tokenized by the character tokenizer.
    #[arg(long)]
    pub text: Option<String>,
    /// Total length to generate up to (default: the model's context).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Suppress EOS until this length (default: max_length, as TinyMem does).
    #[arg(long)]
    pub min_length: Option<usize>,
}

pub fn run(ctx: &Context, a: GenerateArgs) -> Result<()> {
    super::on_device!(ctx, |dev| run_on(dev, a))
}

fn run_on<B: Backend>(dev: &std::sync::Arc<crate::backend::Device<B>>, a: GenerateArgs) -> Result<()> {
    let (cfg, params) = crate::checkpoint::load_model(&a.model)?;
    let math = cfg.vocab_size == crate::data::tokenizer::VOCAB;
    let prompt: Vec<u32> = match (&a.tokens, &a.text) {
        (Some(t), _) => t
            .split(',')
            .map(|x| x.trim().parse::<u32>().map_err(|_| Error::Input(format!("not a token id: {x:?}"))))
            .collect::<Result<_>>()?,
        (None, Some(text)) => crate::data::tokenizer::encode(text),
        (None, None) => return Err(Error::Input("give a prompt with --tokens or --text".into())),
    };
    let max_length = a.max_length.unwrap_or(cfg.n_positions);
    let opts = GenerateOptions { max_length, min_length: a.min_length.unwrap_or(max_length), batch: 1 };
    let mut model = Model::from_params(dev.clone(), cfg, &params)?;
    model.check_tokens(&prompt, 1, prompt.len())?;
    let out = model.generate(&[prompt], &opts)?;
    println!("{}", out[0].iter().map(|t| t.to_string()).collect::<Vec<_>>().join(","));
    if math {
        println!("{}", crate::data::tokenizer::decode(&out[0]));
    }
    Ok(())
}

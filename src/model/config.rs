//! Model hyper-parameters, in Hugging Face `GPT2Config` terms (tinymem.md §1.1).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// MLP activation, named as the HF config names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// max(0, x): TinyMem's choice.
    #[serde(rename = "relu")]
    Relu,
    /// Exact erf GELU: 0.5·x·(1 + erf(x/√2)).
    #[serde(rename = "gelu")]
    Gelu,
    /// tanh approximation (GPT-2's default, HF `gelu_new`).
    #[serde(rename = "gelu_new")]
    GeluNew,
}

impl Activation {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "relu" => Ok(Activation::Relu),
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluNew),
            other => Err(Error::Config(format!(
                "unsupported activation_function {other:?} (memsieve supports relu, gelu, gelu_new)"
            ))),
        }
    }
    pub fn hf_name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Gelu => "gelu",
            Activation::GeluNew => "gelu_new",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    /// Context length (`n_positions`, TinyMem's `max_ctx`).
    pub n_positions: usize,
    pub vocab_size: usize,
    pub activation: Activation,
    pub layer_norm_epsilon: f32,
    pub initializer_range: f32,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
    /// Trained with example-tied dropout: every forward pass masks each block's input
    /// (config.json key `memsieve_example_tied_dropout`; transformers ignores it).
    pub example_tied_dropout: Option<crate::regularize::etd::EtdConfig>,
}

impl ModelConfig {
    /// TinyMem math model (tinymem.md §1.1): width 128, 4 heads, context 150, vocabulary 14, ReLU.
    pub fn tinymem_math(n_layer: usize) -> Self {
        ModelConfig {
            n_layer,
            n_embd: 128,
            n_head: 4,
            n_positions: 150,
            vocab_size: 14,
            activation: Activation::Relu,
            layer_norm_epsilon: 1e-5,
            // The reference hard-codes 0.8/sqrt(128).
            initializer_range: 0.8 / (128f32).sqrt(),
            bos_token_id: Some(10),
            eos_token_id: Some(11),
            pad_token_id: Some(13),
            example_tied_dropout: None,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }
    pub fn n_inner(&self) -> usize {
        4 * self.n_embd
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.n_layer == 0 || self.n_embd == 0 || self.n_head == 0 || self.vocab_size == 0 || self.n_positions == 0 {
            return bad(format!("every model dimension must be positive: {self:?}"));
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!("n_embd {} is not divisible by n_head {}", self.n_embd, self.n_head));
        }
        for (name, id) in [("bos", self.bos_token_id), ("eos", self.eos_token_id), ("pad", self.pad_token_id)] {
            if let Some(id) = id {
                if id as usize >= self.vocab_size {
                    return bad(format!("{name}_token_id {id} is outside the vocabulary of {}", self.vocab_size));
                }
            }
        }
        if !(self.layer_norm_epsilon > 0.0) {
            return bad(format!("layer_norm_epsilon must be positive, got {}", self.layer_norm_epsilon));
        }
        if let Some(e) = &self.example_tied_dropout {
            e.validate()?;
            if self.n_embd > crate::backend::ETD_MAX_C {
                return bad(format!("example-tied dropout supports widths up to {}, not {}", crate::backend::ETD_MAX_C, self.n_embd));
            }
        }
        // Guard absurd sizes before anything is allocated.
        let n = crate::model::params::ParamLayout::new(self).total;
        if n > (1usize << 33) {
            return bad(format!("model has {n} parameters, more than memsieve will allocate"));
        }
        Ok(())
    }
}

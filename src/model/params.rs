//! All parameters live in one flat f32 buffer (llm.c style); this table names the views into it.
//! Per-layer tensors are stacked: every layer's `c_fc.weight` is contiguous, so a mask or an edit
//! over "all MLP matrices" is one range. Matrices use the HF Conv1D layout [in, out] (y = x·W + b),
//! except `wte` [V, C], which doubles as the tied LM head.

use super::config::ModelConfig;

/// The sixteen parameter tensors, in buffer order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamKind {
    Wte,
    Wpe,
    Ln1W,
    Ln1B,
    AttnW,
    AttnB,
    AttnProjW,
    AttnProjB,
    Ln2W,
    Ln2B,
    FcW,
    FcB,
    FcProjW,
    FcProjB,
    LnfW,
    LnfB,
}

pub const ALL_KINDS: [ParamKind; 16] = [
    ParamKind::Wte,
    ParamKind::Wpe,
    ParamKind::Ln1W,
    ParamKind::Ln1B,
    ParamKind::AttnW,
    ParamKind::AttnB,
    ParamKind::AttnProjW,
    ParamKind::AttnProjB,
    ParamKind::Ln2W,
    ParamKind::Ln2B,
    ParamKind::FcW,
    ParamKind::FcB,
    ParamKind::FcProjW,
    ParamKind::FcProjB,
    ParamKind::LnfW,
    ParamKind::LnfB,
];

impl ParamKind {
    pub fn is_per_layer(self) -> bool {
        !matches!(self, ParamKind::Wte | ParamKind::Wpe | ParamKind::LnfW | ParamKind::LnfB)
    }

    /// Shape of one instance (one layer's) in HF layout.
    pub fn shape(self, cfg: &ModelConfig) -> Vec<usize> {
        let (c, v, t) = (cfg.n_embd, cfg.vocab_size, cfg.n_positions);
        let f = cfg.n_inner();
        match self {
            ParamKind::Wte => vec![v, c],
            ParamKind::Wpe => vec![t, c],
            ParamKind::Ln1W | ParamKind::Ln1B | ParamKind::Ln2W | ParamKind::Ln2B => vec![c],
            ParamKind::AttnW => vec![c, 3 * c],
            ParamKind::AttnB => vec![3 * c],
            ParamKind::AttnProjW => vec![c, c],
            ParamKind::AttnProjB => vec![c],
            ParamKind::FcW => vec![c, f],
            ParamKind::FcB => vec![f],
            ParamKind::FcProjW => vec![f, c],
            ParamKind::FcProjB => vec![c],
            ParamKind::LnfW | ParamKind::LnfB => vec![c],
        }
    }

    /// Hugging Face `GPT2LMHeadModel` state-dict name (layer index ignored for global tensors).
    pub fn hf_name(self, layer: usize) -> String {
        let h = |s: &str| format!("transformer.h.{layer}.{s}");
        match self {
            ParamKind::Wte => "transformer.wte.weight".into(),
            ParamKind::Wpe => "transformer.wpe.weight".into(),
            ParamKind::Ln1W => h("ln_1.weight"),
            ParamKind::Ln1B => h("ln_1.bias"),
            ParamKind::AttnW => h("attn.c_attn.weight"),
            ParamKind::AttnB => h("attn.c_attn.bias"),
            ParamKind::AttnProjW => h("attn.c_proj.weight"),
            ParamKind::AttnProjB => h("attn.c_proj.bias"),
            ParamKind::Ln2W => h("ln_2.weight"),
            ParamKind::Ln2B => h("ln_2.bias"),
            ParamKind::FcW => h("mlp.c_fc.weight"),
            ParamKind::FcB => h("mlp.c_fc.bias"),
            ParamKind::FcProjW => h("mlp.c_proj.weight"),
            ParamKind::FcProjB => h("mlp.c_proj.bias"),
            ParamKind::LnfW => "transformer.ln_f.weight".into(),
            ParamKind::LnfB => "transformer.ln_f.bias".into(),
        }
    }
}

/// A named range of the flat parameter buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamView {
    pub name: String,
    pub kind: ParamKind,
    pub layer: Option<usize>,
    pub offset: usize,
    pub shape: Vec<usize>,
}

impl ParamView {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// Offsets of every tensor in the flat buffer.
#[derive(Clone, Debug)]
pub struct ParamLayout {
    /// Offset of each kind's stack (all layers), indexed like `ALL_KINDS`.
    kind_offset: [usize; 16],
    kind_len: [usize; 16],
    n_layer: usize,
    pub views: Vec<ParamView>,
    pub total: usize,
}

impl ParamLayout {
    pub fn new(cfg: &ModelConfig) -> Self {
        let mut kind_offset = [0; 16];
        let mut kind_len = [0; 16];
        let mut views = Vec::new();
        let mut off = 0;
        for (k, kind) in ALL_KINDS.iter().enumerate() {
            let shape = kind.shape(cfg);
            let one: usize = shape.iter().product();
            kind_offset[k] = off;
            kind_len[k] = one;
            let layers = if kind.is_per_layer() { cfg.n_layer } else { 1 };
            for l in 0..layers {
                views.push(ParamView {
                    name: kind.hf_name(l),
                    kind: *kind,
                    layer: kind.is_per_layer().then_some(l),
                    offset: off + l * one,
                    shape: shape.clone(),
                });
            }
            off += layers * one;
        }
        // Order views by offset (they already are) for checkpoint writing.
        ParamLayout { kind_offset, kind_len, n_layer: cfg.n_layer, views, total: off }
    }

    fn index(kind: ParamKind) -> usize {
        ALL_KINDS.iter().position(|k| *k == kind).unwrap()
    }

    /// Offset of one tensor (layer ignored for global tensors).
    pub fn offset(&self, kind: ParamKind, layer: usize) -> usize {
        let k = Self::index(kind);
        if kind.is_per_layer() {
            debug_assert!(layer < self.n_layer);
            self.kind_offset[k] + layer * self.kind_len[k]
        } else {
            self.kind_offset[k]
        }
    }

    /// Element count of one tensor instance.
    pub fn len(&self, kind: ParamKind) -> usize {
        self.kind_len[Self::index(kind)]
    }

    /// The range spanning every layer's instance of `kind`.
    pub fn stack_range(&self, kind: ParamKind) -> std::ops::Range<usize> {
        let k = Self::index(kind);
        let layers = if kind.is_per_layer() { self.n_layer } else { 1 };
        self.kind_offset[k]..self.kind_offset[k] + layers * self.kind_len[k]
    }

    pub fn by_name(&self, name: &str) -> Option<&ParamView> {
        self.views.iter().find(|v| v.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tinymem_parameter_counts() {
        // tinymem.md §1.3
        for (layers, count) in [(2, 417_792), (4, 814_336), (8, 1_607_424), (16, 3_193_600)] {
            assert_eq!(ParamLayout::new(&ModelConfig::tinymem_math(layers)).total, count);
        }
    }

    #[test]
    fn views_tile_the_buffer() {
        let l = ParamLayout::new(&ModelConfig::tinymem_math(3));
        let mut off = 0;
        for v in &l.views {
            assert_eq!(v.offset, off, "{}", v.name);
            off += v.len();
        }
        assert_eq!(off, l.total);
        assert_eq!(l.by_name("transformer.h.2.mlp.c_fc.weight").unwrap().shape, vec![128, 512]);
    }
}

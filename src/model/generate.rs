//! Batched greedy generation with a KV cache, reproducing HF `generate(do_sample=False)` as the
//! TinyMem reference calls it: argmax ties to the lowest id, and the EOS logit masked to −∞ while the
//! sequence is shorter than `min_length`. Everything stays on the device; only the final tokens come back.

use super::{Model, Slot};
use crate::backend::{Backend, Op, View, WeightLayout};
use crate::error::{Error, Result};
use crate::model::params::ParamKind;

/// Settings for `Model::generate`.
#[derive(Clone, Copy, Debug)]
pub struct GenerateOptions {
    /// Total length (prompt included) to generate up to.
    pub max_length: usize,
    /// EOS is suppressed while the length is below this (TinyMem: = max_length).
    pub min_length: usize,
    /// Prompts per batched launch at most (the backend may take fewer at a time, see
    /// `Backend::decode_batch`; results are the same per prompt).
    pub batch: usize,
}

impl<B: Backend> Model<B> {
    /// Greedy continuation of equal-length prompts to `max_length` tokens. Returns whole sequences.
    pub fn generate(&mut self, prompts: &[Vec<u32>], opts: &GenerateOptions) -> Result<Vec<Vec<u32>>> {
        let Some(first) = prompts.first() else { return Ok(Vec::new()) };
        let p = first.len();
        if prompts.iter().any(|x| x.len() != p) {
            return Err(Error::Input("prompts in one generate call must have equal length".into()));
        }
        if p == 0 {
            return Err(Error::Input("empty prompt".into()));
        }
        if opts.max_length > self.cfg.n_positions {
            return Err(Error::Input(format!(
                "max_length {} is longer than the model's context of {}",
                opts.max_length, self.cfg.n_positions
            )));
        }
        if p >= opts.max_length {
            return Ok(prompts.iter().map(|x| x[..opts.max_length.min(p)].to_vec()).collect());
        }
        let mut out = Vec::with_capacity(prompts.len());
        let dev = self.dev.clone();
        for chunk in prompts.chunks(opts.batch.max(1)) {
            out.extend(dev.backend.scope(|| self.generate_batch(chunk, opts))?);
        }
        Ok(out)
    }

    /// Prefill every prompt in one forward pass, then decode in equal sub-batches of at most the
    /// backend's `decode_batch` rows, as independent lanes (`Backend::lanes`).
    fn generate_batch(&mut self, prompts: &[Vec<u32>], opts: &GenerateOptions) -> Result<Vec<Vec<u32>>> {
        let (b, p) = (prompts.len(), prompts[0].len());
        self.forward(&prompts.concat(), None, b, p)?;
        let kv_words = self.cfg.n_layer * 2 * self.cfg.n_embd * opts.max_length;
        let per = b.div_ceil(b.div_ceil(self.dev.backend.decode_batch(kv_words).max(1)));
        let subs: Vec<std::ops::Range<usize>> = (0..b).step_by(per).map(|r0| r0..(r0 + per).min(b)).collect();
        let mut out = Vec::with_capacity(b);
        for rows in self.dev.backend.lanes(subs.len(), |i| self.decode_rows(subs[i].clone(), p, opts)) {
            out.extend(rows?);
        }
        Ok(out)
    }

    /// Greedy decode of prompt rows `rows` of the last (prefill) forward pass, from position p on.
    fn decode_rows(&self, rows: std::ops::Range<usize>, p: usize, opts: &GenerateOptions) -> Result<Vec<Vec<u32>>> {
        let (r0, b, lmax) = (rows.start, rows.len(), opts.max_length);
        let cfg = &self.cfg;
        let (c, nh, v, nl) = (cfg.n_embd, cfg.n_head, cfg.vocab_size, cfg.n_layer);
        let suppress = |len: usize| if len < opts.min_length { cfg.eos_token_id } else { None };
        let dev = &self.dev;
        let layout = &self.layout;
        let pv = |k: ParamKind, layer: usize| View::new(&self.params, layout.offset(k, layer), layout.len(k));

        // KV cache [layer][b, 2c·lmax] (k and v only), output tokens [b, lmax], and one decode
        // step's activations.
        let kv = 2 * c;
        let cache = dev.alloc(nl * b * lmax * kv)?;
        let cache_l = |l: usize| View::new(&cache, l * b * lmax * kv, b * lmax * kv);
        let tokens_out = dev.alloc(b * lmax)?;
        let step = dev.alloc(b * (1 + 7 * c + 3 * c + 8 * c + v + 2))?;
        let mut off = 0;
        let mut slot = |len: usize| {
            let s = Slot { off, len };
            off += len;
            View::new(&step, s.off, s.len)
        };
        let tok = slot(b);
        let (x, ln, qkv, atty, proj, x2) = (slot(b * c), slot(b * c), slot(b * 3 * c), slot(b * c), slot(b * c), slot(b * c));
        let (fch, fch_act) = (slot(b * 4 * c), slot(b * 4 * c));
        let logits = slot(b * v);
        let (mean, rstd) = (slot(b), slot(b));

        {
            let a = self.acts.as_ref().unwrap();
            let al = &a.layout;
            let sub = |s: Slot, per_row: usize| View::new(&a.buf, s.off + r0 * per_row, b * per_row);
            dev.exec(Op::CopyStrided { dst: dev.view(&tokens_out), src: sub(al.tokens, p), batches: 1, rows: b, cols: p, dst_strides: [0, lmax], src_strides: [0, p] });
            for l in 0..nl {
                dev.exec(Op::KvCacheWrite { cache: cache_l(l), qkv: sub(al.layers[l].qkv, p * 3 * c), b, t: p, pos0: 0, t_max: lmax, c, nh });
            }
            // The first new token comes from the prompt's last logits.
            let last = sub(al.logits, p * v).slice((p - 1) * v, b * p * v - (p - 1) * v);
            dev.exec(Op::CopyStrided { dst: logits, src: last, batches: 1, rows: b, cols: v, dst_strides: [0, v], src_strides: [0, p * v] });
        }
        dev.exec(Op::Argmax { out: tok, logits, n: b, v, suppress: suppress(p) });
        dev.exec(Op::CopyStrided { dst: View::new(&tokens_out, p, b * lmax - p), src: tok, batches: 1, rows: b, cols: 1, dst_strides: [0, lmax], src_strides: [0, 1] });

        let eps = cfg.layer_norm_epsilon;
        use ParamKind::*;
        for pos in p..lmax - 1 {
            // Decode the token at `pos` and pick the one at `pos + 1`.
            dev.exec(Op::EncoderForward { out: x, tokens: tok, wte: pv(Wte, 0), wpe: pv(Wpe, 0), b, t: 1, c, pos0: pos });
            for l in 0..nl {
                // Example-tied dropout's evaluation mask on the block input (in place: it is the residual).
                if let Some(op) = self.etd_op(x, x, None, b, 1, pos) {
                    dev.exec(op);
                }
                dev.exec(Op::LayerNormForward { out: ln, mean, rstd, inp: x, weight: pv(Ln1W, l), bias: pv(Ln1B, l), n: b, c, eps });
                dev.exec(Op::MatmulForward { out: qkv, inp: ln, weight: pv(AttnW, l), bias: Some(pv(AttnB, l)), n: b, c, oc: 3 * c, layout: WeightLayout::InOut });
                dev.exec(Op::KvCacheWrite { cache: cache_l(l), qkv, b, t: 1, pos0: pos, t_max: lmax, c, nh });
                dev.exec(Op::AttentionDecode { out: atty, qkv, cache: cache_l(l), b, pos, t_max: lmax, c, nh });
                dev.exec(Op::MatmulForward { out: proj, inp: atty, weight: pv(AttnProjW, l), bias: Some(pv(AttnProjB, l)), n: b, c, oc: c, layout: WeightLayout::InOut });
                dev.exec(Op::Residual { out: x2, a: x, b: proj, n: b * c });
                dev.exec(Op::LayerNormForward { out: ln, mean, rstd, inp: x2, weight: pv(Ln2W, l), bias: pv(Ln2B, l), n: b, c, eps });
                dev.exec(Op::MatmulForward { out: fch, inp: ln, weight: pv(FcW, l), bias: Some(pv(FcB, l)), n: b, c, oc: 4 * c, layout: WeightLayout::InOut });
                dev.exec(Op::ActivationForward { out: fch_act, inp: fch, n: b * 4 * c, act: cfg.activation });
                dev.exec(Op::MatmulForward { out: proj, inp: fch_act, weight: pv(FcProjW, l), bias: Some(pv(FcProjB, l)), n: b, c: 4 * c, oc: c, layout: WeightLayout::InOut });
                dev.exec(Op::Residual { out: x, a: x2, b: proj, n: b * c });
            }
            dev.exec(Op::LayerNormForward { out: ln, mean, rstd, inp: x, weight: pv(LnfW, 0), bias: pv(LnfB, 0), n: b, c, eps });
            dev.exec(Op::MatmulForward { out: logits, inp: ln, weight: pv(Wte, 0), bias: None, n: b, c, oc: v, layout: WeightLayout::OutIn });
            dev.exec(Op::Argmax { out: tok, logits, n: b, v, suppress: suppress(pos + 1) });
            let col = View::new(&tokens_out, pos + 1, b * lmax - pos - 1);
            dev.exec(Op::CopyStrided { dst: col, src: tok, batches: 1, rows: b, cols: 1, dst_strides: [0, lmax], src_strides: [0, 1] });
        }
        let all = dev.download_u32(dev.view(&tokens_out));
        Ok(all.chunks(lmax).map(|r| r.to_vec()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::GenerateOptions;
    use crate::backend::cpu::CpuBackend;
    use crate::backend::{Backend, Device};
    use crate::model::config::ModelConfig;
    use crate::model::Model;
    use crate::rng::{purpose, Stream};
    use std::sync::Arc;

    /// Sub-batches decoded concurrently (two lanes, more sub-batches than lanes, a ragged last one)
    /// give the same tokens as the same sub-batches decoded one after another on one thread.
    #[test]
    fn concurrent_lanes_match_sequential_decoding() {
        let cfg = ModelConfig::tinymem_math(2);
        let mut rng = Stream::new(3, purpose::MISC, 0);
        let prompts: Vec<Vec<u32>> = (0..70).map(|_| (0..10).map(|_| rng.below(11) as u32).collect()).collect();
        let opts = GenerateOptions { max_length: 80, min_length: 80, batch: 70 };
        let run = |threads: usize| {
            let dev = Arc::new(Device::new(CpuBackend::with_threads(threads)));
            let kv_words = cfg.n_layer * 2 * cfg.n_embd * opts.max_length;
            let per = dev.backend.decode_batch(kv_words);
            let mut m = Model::new(dev, cfg.clone(), 7).unwrap();
            (m.generate(&prompts, &opts).unwrap(), per)
        };
        let ((two, per2), (one, _)) = (run(2), run(1));
        assert!(prompts.len().div_ceil(per2) > 2, "only {per2} rows per sub-batch: the lanes are not exercised");
        assert_eq!(two.len(), prompts.len());
        for (i, (a, b)) in two.iter().zip(&one).enumerate() {
            assert_eq!(a[..10], prompts[i][..], "prompt {i} is kept");
            assert_eq!(a, b, "prompt {i}: concurrent lanes decode differently");
        }
        // The continuation is not trivially constant (the comparison has something to catch).
        assert!(two.iter().any(|r| r[10..].iter().any(|&t| t != r[10])));
    }
}

//! The one-shot gradient methods (tinymem.md §5.5): accumulate ∇L over the memorized set, then
//! zero the most implicated MLP weights — per tensor by |g| (Durable), globally by |g| (Durable-
//! Aggregate), or per tensor by the block-Fisher saliency w²/(2·[F⁻¹]_jj) (Second-Order Unlearning).

use super::{mlp_tensors, pruned_count, select_and_zero, Method, UnlearnOptions, UnlearnOutcome};
use crate::backend::{Backend, Op, SelectKey, View};
use crate::data::{Batches, TokenMatrix};
use crate::error::Result;
use crate::model::Model;

/// Σ over batches of ∇(batch-mean loss) over `rows` (the reference's accumulated `.grad`).
pub fn memorized_gradient<B: Backend>(model: &mut Model<B>, rows: &TokenMatrix, batch: usize, mask_pad: bool, progress: &dyn Fn(usize, usize)) -> Result<Vec<f32>> {
    let all: Vec<usize> = (0..rows.rows()).collect();
    let batches = Batches::sequential(rows, &all, batch)?;
    let total = batches.num_batches();
    let t = rows.cols;
    let mut g = vec![0f32; model.num_params()];
    for (i, b) in batches.enumerate() {
        let targets = model.lm_targets(&b.tokens, b.len(), t, mask_pad);
        model.forward_backward(&b.tokens, &targets, b.len(), t)?;
        for (a, x) in g.iter_mut().zip(model.download_grads().expect("gradients after a backward pass")) {
            *a += x;
        }
        progress(i + 1, total);
    }
    Ok(g)
}

pub fn run<B: Backend>(model: &mut Model<B>, method: Method, memorized: &TokenMatrix, o: &UnlearnOptions, progress: &dyn Fn(usize, usize)) -> Result<UnlearnOutcome> {
    let g = memorized_gradient(model, memorized, o.grad_batch, o.mask_pad, progress)?;
    let dev = model.dev.clone();
    let tensors = mlp_tensors(model, true);
    let range = |&(k, l): &(crate::model::params::ParamKind, usize)| (model.layout.offset(k, l), model.layout.len(k));
    let mlp_len: usize = tensors.iter().map(|t| range(t).1).sum();
    let cut = dev.alloc(2)?;
    let mut zeroed = 0;
    let domain;
    match method {
        Method::Durable | Method::Sou => {
            domain = mlp_len;
            let gbuf = dev.alloc(g.len())?;
            dev.upload_f32(dev.view(&gbuf), &g);
            let saliency = if method == Method::Sou { Some(dev.alloc(g.len())?) } else { None };
            for t in &tensors {
                let (off, len) = range(t);
                let kz = pruned_count(len, o.ratio);
                if kz == 0 {
                    continue;
                }
                let w = View::new(&model.params, off, len);
                let gv = View::new(&gbuf, off, len);
                // Rank n − kz and up are the kz largest keys.
                let x = match &saliency {
                    Some(s) => {
                        let sv = View::new(s, off, len);
                        dev.exec(Op::SouScores { out: sv, w, g: gv, n: len, block: o.sou_block, lambda: o.sou_lambda });
                        sv
                    }
                    None => gv,
                };
                select_and_zero(&dev, w, x, None, dev.view(&cut), len - kz, SelectKey::Abs, false);
                zeroed += kz;
            }
        }
        Method::DurableAggregate => {
            // The selection domain as one contiguous vector: the MLP tensors (default) or every
            // parameter (the reference); only MLP tensors are written back either way.
            let mut params = model.download_params();
            let spans: Vec<(usize, usize)> = if o.select_all_params { vec![(0, params.len())] } else { tensors.iter().map(range).collect() };
            let gather = |v: &[f32]| spans.iter().flat_map(|&(off, len)| v[off..off + len].iter().copied()).collect::<Vec<f32>>();
            let (gcat, wcat) = (gather(&g), gather(&params));
            domain = gcat.len();
            let kz = pruned_count(domain, o.ratio);
            if kz > 0 {
                let (gbuf, wbuf) = (dev.alloc(domain)?, dev.alloc(domain)?);
                dev.upload_f32(dev.view(&gbuf), &gcat);
                dev.upload_f32(dev.view(&wbuf), &wcat);
                select_and_zero(&dev, dev.view(&wbuf), dev.view(&gbuf), None, dev.view(&cut), domain - kz, SelectKey::Abs, false);
                let masked = dev.download_f32(dev.view(&wbuf));
                // Positions of the domain's entries in the flat buffer, in gather order.
                let mut at = 0;
                let mlp: Vec<(usize, usize)> = tensors.iter().map(range).collect();
                for &(off, len) in &spans {
                    for j in 0..len {
                        let p = off + j;
                        if masked[at] == 0.0 && wcat[at] != 0.0 && mlp.iter().any(|&(o, l)| (o..o + l).contains(&p)) {
                            params[p] = 0.0;
                            zeroed += 1;
                        }
                        at += 1;
                    }
                }
                model.upload_params(&params);
            }
        }
        _ => unreachable!("durable::run handles Durable, Durable-Aggregate and SOU"),
    }
    Ok(UnlearnOutcome { method, zeroed, domain, steps: 1, seconds: 0.0, epochs: Vec::new(), mask_changed: 0 })
}

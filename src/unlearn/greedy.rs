//! Greedy (tinymem.md §5.5, after Maini et al.): for ⌈ratio·#params⌉ iterations, take a batch from
//! M ∪ C (y = +1 on M, −1 on C), backpropagate J = mean_j(−B·y_j·ℓ_j) = −Σ_j y_j·ℓ_j, and zero the
//! one parameter with the largest w·∂J/∂w — a rank-(n−1) selection over all parameters on the device.

use super::{row_weighted_targets, UnlearnOptions, UnlearnOutcome, UnlearnSets};
use crate::backend::{Backend, Op, SelectKey, View};
use crate::data::Batches;
use crate::error::{Error, Result};
use crate::model::Model;

pub fn run<B: Backend>(model: &mut Model<B>, sets: &UnlearnSets<'_>, o: &UnlearnOptions, progress: &dyn Fn(usize, usize)) -> Result<UnlearnOutcome> {
    let n = model.num_params();
    let full = (n as f64 * o.ratio).ceil() as usize;
    let iterations = o.max_iterations.map_or(full, |m| m.min(full));
    if iterations < full {
        eprintln!("greedy: stopping after {iterations} of its {full} iterations (--max-iterations)");
    }
    let mut rows = sets.memorized.clone();
    rows.extend(sets.retain);
    let n_mem = sets.memorized.rows();
    let all: Vec<usize> = (0..rows.rows()).collect();
    let t = rows.cols;
    let dev = model.dev.clone();
    let cut = dev.alloc(2)?;
    // MaskApply reads the keys from a copy of the parameters, so it never aliases what it writes.
    let before = dev.alloc(n)?;
    let (mut pass, mut batches) = (0u32, Batches::shuffled(&rows, &all, o.greedy_batch, o.seed, 0x6e00_0000)?);
    for it in 0..iterations {
        let batch = match batches.next() {
            Some(b) => b,
            None => {
                pass += 1;
                batches = Batches::shuffled(&rows, &all, o.greedy_batch, o.seed, 0x6e00_0000 + pass)?;
                batches.next().ok_or_else(|| Error::Input("greedy has no rows to draw batches from".into()))?
            }
        };
        let b = batch.len();
        let coef: Vec<f32> = batch.rows.iter().map(|&r| if r < n_mem { -1.0 } else { 1.0 }).collect();
        let (targets, weights) = row_weighted_targets(model, &batch.tokens, b, t, &coef, o.mask_pad);
        model.forward_backward_weighted(&batch.tokens, &targets, &weights, b, t, false)?;
        let grads = View::new(model.grads_buffer().expect("gradients after a backward pass"), 0, n);
        let params = View::new(&model.params, 0, n);
        dev.exec(Op::CopyStrided { dst: dev.view(&before), src: params, batches: 1, rows: 1, cols: n, dst_strides: [0, 0], src_strides: [0, 0] });
        let x = dev.view(&before);
        dev.exec(Op::SelectRank { cut: dev.view(&cut), x, y: Some(grads), n, k: n - 1, key: SelectKey::Signed });
        dev.exec(Op::MaskApply { w: params, x, y: Some(grads), cut: dev.view(&cut), n, key: SelectKey::Signed, below: false });
        progress(it + 1, iterations);
    }
    Ok(UnlearnOutcome { method: super::Method::Greedy, zeroed: iterations, domain: n, steps: iterations, seconds: 0.0, epochs: Vec::new(), mask_changed: 0 })
}

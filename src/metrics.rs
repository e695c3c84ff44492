//! Memorization and quality metrics (tinymem.md §4): % memorized by exact match of a greedy
//! continuation, backdoor attack success, next-token accuracy (with and without padding targets),
//! mean cross-entropy and perplexity (both the reference's mean of per-batch exp and exp of the mean).

use crate::backend::Backend;
use crate::data::TokenMatrix;
use crate::error::{Error, Result};
use crate::model::generate::GenerateOptions;
use crate::model::Model;
use serde::Serialize;

/// Token-level quality of a model on a set of equal-length rows.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Quality {
    pub rows: usize,
    /// Mean next-token cross-entropy over every target position (padding included, as trained).
    pub loss: f64,
    /// Argmax accuracy over all targets, padding included (the figure comparable with the paper).
    pub accuracy: f64,
    /// Argmax accuracy over targets that are not padding.
    pub accuracy_no_pad: f64,
    /// exp(token-mean cross-entropy).
    pub perplexity: f64,
    /// Mean over batches of exp(batch-mean cross-entropy): the reference's figure.
    pub perplexity_batch_mean: f64,
}

/// Evaluate loss, accuracy and perplexity over `rows` (each of length t) in batches.
pub fn quality<B: Backend>(model: &mut Model<B>, rows: &TokenMatrix, batch: usize) -> Result<Quality> {
    if rows.rows() == 0 {
        return Err(Error::Data("empty evaluation set".into()));
    }
    let t = rows.cols;
    let pad = model.cfg.pad_token_id;
    let (mut loss_sum, mut n_targets, mut correct, mut correct_np, mut n_np) = (0f64, 0usize, 0usize, 0usize, 0usize);
    let (mut ppl_batches, mut n_batches) = (0f64, 0usize);
    for tokens in rows.data.chunks(batch.max(1) * t) {
        let b = tokens.len() / t;
        let targets = model.lm_targets(tokens, b, t, false);
        let out = model.evaluate(tokens, &targets, b, t)?;
        for (i, &tg) in targets.iter().enumerate() {
            if tg == crate::backend::IGNORE_TARGET {
                continue;
            }
            let hit = out.preds[i] == tg;
            correct += hit as usize;
            if Some(tg) != pad {
                n_np += 1;
                correct_np += hit as usize;
            }
        }
        loss_sum += out.loss * out.n_targets as f64;
        n_targets += out.n_targets;
        ppl_batches += out.loss.exp();
        n_batches += 1;
    }
    let loss = loss_sum / n_targets.max(1) as f64;
    if !loss.is_finite() {
        return Err(Error::Numerical(format!("evaluation loss is {loss}")));
    }
    Ok(Quality {
        rows: rows.rows(),
        loss,
        accuracy: correct as f64 / n_targets.max(1) as f64,
        accuracy_no_pad: correct_np as f64 / n_np.max(1) as f64,
        perplexity: loss.exp(),
        perplexity_batch_mean: ppl_batches / n_batches.max(1) as f64,
    })
}

/// Result of the exact-match memorization test for one group of sequences.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Memorization {
    /// Sequences tested (the noisy ones whose window differs from the clean one).
    pub tested: usize,
    pub memorized: usize,
    /// Continuations equal to the clean sequence instead (`perc_not_mem_correct_out`).
    pub clean_output: usize,
    /// Indices (into the input list) of the memorized sequences: the unlearning set M.
    pub memorized_idx: Vec<usize>,
}

impl Memorization {
    pub fn percent(&self) -> f64 {
        100.0 * self.memorized as f64 / self.tested.max(1) as f64
    }
}

/// Window of the memorization test (tinymem.md §4): prompt 50, compare positions 50..100.
#[derive(Clone, Copy, Debug)]
pub struct MemWindow {
    pub prompt_len: usize,
    pub k: usize,
    /// Prompts per generate launch.
    pub batch: usize,
}

impl MemWindow {
    pub fn tinymem() -> Self {
        MemWindow { prompt_len: 50, k: 50, batch: 128 }
    }
}

/// % memorized: prompt with the clean sequence's first `prompt_len` tokens, greedy-generate, and count
/// a noisy sequence as memorized iff the generated window equals the noisy window. Sequences whose
/// window equals the clean window (noise outside it) are skipped, as in the reference.
pub fn memorization<B: Backend>(
    model: &mut Model<B>,
    noisy: &TokenMatrix,
    clean: &TokenMatrix,
    w: &MemWindow,
) -> Result<Memorization> {
    if noisy.rows() != clean.rows() {
        return Err(Error::Data(format!("{} noisy sequences but {} clean counterparts", noisy.rows(), clean.rows())));
    }
    let end = w.prompt_len + w.k;
    if noisy.cols < end || clean.cols < end {
        return Err(Error::Data(format!("sequences are shorter than the memorization window ({end})")));
    }
    let tested_idx: Vec<usize> = (0..noisy.rows())
        .filter(|&i| crate::data::window_differs(noisy.row(i), clean.row(i), w.prompt_len, end))
        .collect();
    let prompts: Vec<Vec<u32>> = tested_idx.iter().map(|&i| clean.row(i)[..w.prompt_len].to_vec()).collect();
    // The reference generates to 150 with EOS suppressed throughout; stopping at the window's end
    // gives the same tokens up to it, since suppression holds at every step either way.
    let generated = model.generate(&prompts, &GenerateOptions { max_length: end, min_length: end, batch: w.batch })?;
    let mut m = Memorization { tested: tested_idx.len(), ..Default::default() };
    for (g, &i) in generated.iter().zip(&tested_idx) {
        if g[w.prompt_len..end] == noisy.row(i)[w.prompt_len..end] {
            m.memorized += 1;
            m.memorized_idx.push(i);
        } else if g[w.prompt_len..end] == clean.row(i)[w.prompt_len..end] {
            m.clean_output += 1;
        }
    }
    Ok(m)
}

/// Backdoor attack success: prompt with each clean sequence up to and including its trigger and count
/// the continuations whose next `k` tokens (up to `gen_length`) equal the backdoored sequence.
pub fn backdoor_asr<B: Backend>(
    model: &mut Model<B>,
    backdoored: &TokenMatrix,
    clean: &TokenMatrix,
    prompt_lens: &[usize],
    k: usize,
    gen_length: usize,
) -> Result<Memorization> {
    if backdoored.rows() != clean.rows() || clean.rows() != prompt_lens.len() {
        return Err(Error::Data("backdoor sets are not aligned".into()));
    }
    let mut m = Memorization { tested: clean.rows(), ..Default::default() };
    // Prompts of equal length share one batched generate call.
    let mut by_len: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, &p) in prompt_lens.iter().enumerate() {
        by_len.entry(p).or_default().push(i);
    }
    for (p, idx) in by_len {
        let end = (p + k).min(gen_length);
        let prompts: Vec<Vec<u32>> = idx.iter().map(|&i| clean.row(i)[..p].to_vec()).collect();
        let gen = model.generate(&prompts, &GenerateOptions { max_length: end, min_length: end, batch: 128 })?;
        for (g, &i) in gen.iter().zip(&idx) {
            if g[p..end] == backdoored.row(i)[p..end] {
                m.memorized += 1;
                m.memorized_idx.push(i);
            }
        }
    }
    m.memorized_idx.sort_unstable();
    Ok(m)
}

/// The accuracy ceiling of a data set: the next-token accuracy of a predictor that knows the set
/// exactly and, for each prefix, guesses the most frequent next token among the rows sharing it
/// (padding targets included, like `Quality::accuracy`). Rows are treated as equally likely, so this
/// is the Bayes-optimal accuracy for "a row drawn from this set"; a model that generalizes the task
/// rule but cannot know where a sequence starts sits at this ceiling.
pub fn accuracy_ceiling(rows: &TokenMatrix) -> f64 {
    if rows.rows() == 0 {
        return 0.0;
    }
    // Sorting groups rows by shared prefixes; for each position t, runs of rows with equal
    // prefix [..=t] are contiguous, and within a run the best guess is the modal next token.
    let mut sorted: Vec<&[u32]> = rows.iter_rows().collect();
    sorted.sort();
    let t = rows.cols;
    let (mut correct, mut total) = (0usize, 0usize);
    for pos in 0..t.saturating_sub(1) {
        let mut start = 0;
        while start < sorted.len() {
            let mut end = start + 1;
            while end < sorted.len() && sorted[end][..=pos] == sorted[start][..=pos] {
                end += 1;
            }
            // Within the run the rows are sorted, so equal next tokens are contiguous too.
            let (mut best, mut run) = (0usize, 1usize);
            for i in start + 1..=end {
                if i < end && sorted[i][pos + 1] == sorted[i - 1][pos + 1] {
                    run += 1;
                } else {
                    best = best.max(run);
                    run = 1;
                }
            }
            correct += best;
            total += end - start;
            start = end;
        }
    }
    correct as f64 / total.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::accuracy_ceiling;
    use crate::data::TokenMatrix;

    #[test]
    fn ceiling_of_deterministic_and_ambiguous_sets() {
        // One row: everything predictable.
        assert_eq!(accuracy_ceiling(&TokenMatrix::from_data(4, vec![1, 2, 3, 4]).unwrap()), 1.0);
        // Two rows that share "1" then differ: position 0's target is a coin flip (1 of 2), the rest
        // is determined by the prefix: (1 + 2 + 2) / 6.
        let c = accuracy_ceiling(&TokenMatrix::from_data(4, vec![1, 2, 3, 4, 1, 5, 6, 7]).unwrap());
        assert!((c - 5.0 / 6.0).abs() < 1e-12, "{c}");
    }
}

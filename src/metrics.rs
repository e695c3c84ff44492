//! Memorization and quality metrics (tinymem.md §4): % memorized by exact match of a greedy
//! continuation, backdoor attack success, next-token accuracy (with and without padding targets),
//! mean cross-entropy and perplexity (both the reference's mean of per-batch exp and exp of the mean).

use crate::backend::Backend;
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
pub fn quality<B: Backend>(model: &mut Model<B>, rows: &[Vec<u32>], batch: usize) -> Result<Quality> {
    let Some(first) = rows.first() else { return Err(Error::Data("empty evaluation set".into())) };
    let t = first.len();
    if rows.iter().any(|r| r.len() != t) {
        return Err(Error::Data("evaluation rows must have equal length (pad them)".into()));
    }
    let pad = model.cfg.pad_token_id;
    let (mut loss_sum, mut n_targets, mut correct, mut correct_np, mut n_np) = (0f64, 0usize, 0usize, 0usize, 0usize);
    let (mut ppl_batches, mut n_batches) = (0f64, 0usize);
    for chunk in rows.chunks(batch.max(1)) {
        let b = chunk.len();
        let tokens: Vec<u32> = chunk.concat();
        let targets = model.lm_targets(&tokens, b, t, false);
        let out = model.evaluate(&tokens, &targets, b, t)?;
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
        rows: rows.len(),
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
    /// Generation runs to this total length with EOS suppressed (the reference: 150).
    pub gen_length: usize,
    pub batch: usize,
}

impl MemWindow {
    pub fn tinymem(gen_length: usize) -> Self {
        MemWindow { prompt_len: 50, k: 50, gen_length, batch: 128 }
    }
}

/// % memorized: prompt with the clean sequence's first `prompt_len` tokens, greedy-generate, and count
/// a noisy sequence as memorized iff the generated window equals the noisy window. Sequences whose
/// window equals the clean window (noise outside it) are skipped, as in the reference.
pub fn memorization<B: Backend>(
    model: &mut Model<B>,
    noisy: &[Vec<u32>],
    clean: &[Vec<u32>],
    w: &MemWindow,
) -> Result<Memorization> {
    if noisy.len() != clean.len() {
        return Err(Error::Data(format!("{} noisy sequences but {} clean counterparts", noisy.len(), clean.len())));
    }
    let end = w.prompt_len + w.k;
    let mut tested_idx = Vec::new();
    for (i, (n, c)) in noisy.iter().zip(clean).enumerate() {
        if n.len() < end || c.len() < end {
            return Err(Error::Data(format!("sequence {i} is shorter than the memorization window ({end})")));
        }
        if n[w.prompt_len..end] != c[w.prompt_len..end] {
            tested_idx.push(i);
        }
    }
    let prompts: Vec<Vec<u32>> = tested_idx.iter().map(|&i| clean[i][..w.prompt_len].to_vec()).collect();
    let len = w.gen_length.max(end);
    let generated = model.generate(&prompts, &GenerateOptions { max_length: len, min_length: len, batch: w.batch })?;
    let mut m = Memorization { tested: tested_idx.len(), ..Default::default() };
    for (g, &i) in generated.iter().zip(&tested_idx) {
        if g[w.prompt_len..end] == noisy[i][w.prompt_len..end] {
            m.memorized += 1;
            m.memorized_idx.push(i);
        } else if g[w.prompt_len..end] == clean[i][w.prompt_len..end] {
            m.clean_output += 1;
        }
    }
    Ok(m)
}

/// Backdoor attack success: prompt with each clean sequence up to and including its trigger and count
/// the continuations whose next `k` tokens equal the backdoored sequence.
pub fn backdoor_asr<B: Backend>(
    model: &mut Model<B>,
    backdoored: &[Vec<u32>],
    clean: &[Vec<u32>],
    prompt_lens: &[usize],
    k: usize,
    gen_length: usize,
) -> Result<Memorization> {
    if backdoored.len() != clean.len() || clean.len() != prompt_lens.len() {
        return Err(Error::Data("backdoor sets are not aligned".into()));
    }
    let mut m = Memorization { tested: clean.len(), ..Default::default() };
    // Prompts of equal length share one batched generate call.
    let mut by_len: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, &p) in prompt_lens.iter().enumerate() {
        by_len.entry(p).or_default().push(i);
    }
    for (p, idx) in by_len {
        let end = (p + k).min(gen_length);
        let prompts: Vec<Vec<u32>> = idx.iter().map(|&i| clean[i][..p].to_vec()).collect();
        let gen = model.generate(&prompts, &GenerateOptions { max_length: gen_length, min_length: gen_length, batch: 128 })?;
        for (g, &i) in gen.iter().zip(&idx) {
            if g[p..end] == backdoored[i][p..end] {
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
pub fn accuracy_ceiling(rows: &[Vec<u32>]) -> f64 {
    if rows.is_empty() {
        return 0.0;
    }
    // Sorting groups rows by shared prefixes; for each position t, runs of rows with equal
    // prefix [..=t] are contiguous, and within a run the best guess is the modal next token.
    let mut sorted: Vec<&Vec<u32>> = rows.iter().collect();
    sorted.sort();
    let t = rows.iter().map(|r| r.len()).min().unwrap();
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

    #[test]
    fn ceiling_of_deterministic_and_ambiguous_sets() {
        // One row: everything predictable.
        assert_eq!(accuracy_ceiling(&[vec![1, 2, 3, 4]]), 1.0);
        // Two rows that share "1" then differ: position 0's target is a coin flip (1 of 2), the rest
        // is determined by the prefix: (1 + 2 + 2) / 6.
        let c = accuracy_ceiling(&[vec![1, 2, 3, 4], vec![1, 5, 6, 7]]);
        assert!((c - 5.0 / 6.0).abs() < 1e-12, "{c}");
    }
}

//! A classification variant of the TinyMem math data, for the predict-memorization experiment
//! (smi.md §10, §14): each row is a short task prompt, a separator and one answer token,
//! `^x₁ x₂ … x_m$a`, where x₁… are the first m numbers of the sequence of start i (§2.1) and the
//! answer a is the last digit of the next number x_{m+1}. `$` (EOS) is the separator, so the
//! answer is the row's last token and the loss is taken there only (every other target is
//! `IGNORE_TARGET`), like the paper's `last_token_only` answer loss. The ten digits are the options.
//!
//! Label noise as in the paper: with probability 1/30 the trained answer is replaced by a digit
//! drawn uniformly from the ten options (it can equal the true one).

use super::math::{encode_numbers, sequence_numbers, MathTask};
use super::{tokenizer, TokenMatrix};
use crate::backend::IGNORE_TARGET;
use crate::error::{Error, Result};
use crate::rng::{purpose, Stream};
use serde::{Deserialize, Serialize};

/// Stream id (within `purpose::DATA`) of the label noise; the math data uses 1–6.
const LABEL_NOISE_STREAM: u32 = 7;
/// The answer options: the digit tokens 0–9.
pub const OPTIONS: [u32; 10] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClassifyConfig {
    pub task: MathTask,
    /// Multiplier / increment of the task map.
    pub k: u64,
    /// Rows (starts 0..pool).
    pub pool: usize,
    /// Numbers in each prompt.
    pub prompt_numbers: usize,
    /// Probability that a label is redrawn uniformly from the options.
    pub label_noise: f64,
    pub seed: u64,
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        ClassifyConfig { task: MathTask::Increment, k: 7, pool: 2000, prompt_numbers: 3, label_noise: 1.0 / 30.0, seed: 0 }
    }
}

/// The rows, padded to the longest one, with true and trained answers.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassifyData {
    pub config: ClassifyConfig,
    /// `[pool, width]`, right-padded with PAD after the answer.
    pub tokens: TokenMatrix,
    /// Tokens of each row up to and including its answer.
    pub lengths: Vec<usize>,
    /// The answer the rule gives.
    pub true_labels: Vec<u32>,
    /// The answer written into the row and trained on (noise included).
    pub labels: Vec<u32>,
    /// Rows whose label was redrawn (the draw may have kept the true answer).
    pub redrawn: Vec<bool>,
}

impl ClassifyData {
    pub fn generate(c: &ClassifyConfig) -> Result<Self> {
        if c.pool < 2 || c.prompt_numbers == 0 {
            return Err(Error::Data(format!("classification data needs a pool ≥ 2 and ≥ 1 prompt number (got {} and {})", c.pool, c.prompt_numbers)));
        }
        if !(0.0..=1.0).contains(&c.label_noise) {
            return Err(Error::Data(format!("label noise {} is not a probability", c.label_noise)));
        }
        let mut noise = Stream::new(c.seed, purpose::DATA, LABEL_NOISE_STREAM);
        let (mut rows, mut lengths, mut true_labels, mut labels, mut redrawn) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..c.pool {
            let numbers = sequence_numbers(c.task, c.k, i as u64, c.prompt_numbers + 1);
            let truth = (numbers[c.prompt_numbers] % 10) as u32;
            // Both draws happen for every row, so row i's noise does not depend on the others.
            let flip = noise.uniform() < c.label_noise;
            let draw = OPTIONS[noise.below(OPTIONS.len() as u64) as usize];
            let label = if flip { draw } else { truth };
            // encode_numbers writes ^x₁ … x_m$ padded to its width; cut the padding, add the answer.
            let mut row = Vec::new();
            let width = 2 + c.prompt_numbers * 21;
            encode_numbers(&numbers[..c.prompt_numbers], width, &mut row)?;
            let end = row.iter().position(|&t| t == tokenizer::PAD).unwrap_or(row.len());
            row.truncate(end);
            row.push(label);
            lengths.push(row.len());
            rows.push(row);
            true_labels.push(truth);
            labels.push(label);
            redrawn.push(flip);
        }
        let width = *lengths.iter().max().expect("pool ≥ 2");
        let mut tokens = TokenMatrix::with_capacity(width, c.pool);
        for mut r in rows {
            r.resize(width, tokenizer::PAD);
            tokens.push_row(&r);
        }
        Ok(ClassifyData { config: c.clone(), tokens, lengths, true_labels, labels, redrawn })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Position whose next token is the answer (the separator).
    pub fn query_pos(&self, row: usize) -> usize {
        self.lengths[row] - 2
    }

    /// Rows whose trained label differs from the rule's answer.
    pub fn mislabelled(&self) -> Vec<bool> {
        self.labels.iter().zip(&self.true_labels).map(|(a, b)| a != b).collect()
    }

    /// Targets of a batch of `rows` (each `tokens.cols` wide): the answer at the separator, nothing
    /// elsewhere.
    pub fn targets(&self, rows: &[usize]) -> Vec<u32> {
        let t = self.tokens.cols;
        let mut tg = vec![IGNORE_TARGET; rows.len() * t];
        for (b, &r) in rows.iter().enumerate() {
            tg[b * t + self.query_pos(r)] = self.labels[r];
        }
        tg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_answers_and_targets() {
        let d = ClassifyData::generate(&ClassifyConfig { pool: 300, ..Default::default() }).unwrap();
        // Start 5: 12 19 26, next 33 → answer 3.
        let row5 = &d.tokens.row(5)[..d.lengths[5]];
        assert_eq!(tokenizer::decode(&row5[..row5.len() - 1]), "^12 19 26$");
        assert_eq!(d.true_labels[5], 3);
        for r in 0..d.len() {
            let n = d.lengths[r];
            assert_eq!(d.tokens.row(r)[n - 2], tokenizer::EOS);
            assert_eq!(d.tokens.row(r)[n - 1], d.labels[r]);
            assert!(d.tokens.row(r)[n..].iter().all(|&t| t == tokenizer::PAD));
            assert_eq!(d.true_labels[r] as u64, (r as u64 + 7 * 4) % 10);
            if !d.redrawn[r] {
                assert_eq!(d.labels[r], d.true_labels[r]);
            }
        }
        let tg = d.targets(&[5, 0]);
        let t = d.tokens.cols;
        assert_eq!(tg.iter().filter(|&&x| x != IGNORE_TARGET).count(), 2);
        assert_eq!(tg[d.query_pos(5)], d.labels[5]);
        assert_eq!(tg[t + d.query_pos(0)], d.labels[0]);
    }

    #[test]
    fn noise_rate_and_determinism() {
        let c = ClassifyConfig { pool: 30_000, ..Default::default() };
        let d = ClassifyData::generate(&c).unwrap();
        let redrawn = d.redrawn.iter().filter(|&&x| x).count() as f64;
        // 1000 expected, σ ≈ 31.
        assert!((redrawn - 1000.0).abs() < 150.0, "{redrawn}");
        let wrong = d.mislabelled().iter().filter(|&&x| x).count() as f64;
        assert!((wrong - 900.0).abs() < 150.0, "{wrong}");
        let small = ClassifyData::generate(&ClassifyConfig { pool: 500, ..c.clone() }).unwrap();
        assert_eq!(small, ClassifyData::generate(&ClassifyConfig { pool: 500, ..c.clone() }).unwrap());
        // Row i's label does not depend on the pool size.
        assert_eq!(&d.labels[..500], &small.labels[..]);
        let other = ClassifyData::generate(&ClassifyConfig { pool: 500, seed: 1, ..c }).unwrap();
        assert_ne!(small.labels, other.labels);
        assert_eq!(small.true_labels, other.true_labels);
    }

    #[test]
    fn bad_configs() {
        assert!(ClassifyData::generate(&ClassifyConfig { pool: 1, ..Default::default() }).is_err());
        assert!(ClassifyData::generate(&ClassifyConfig { label_noise: 1.5, ..Default::default() }).is_err());
        assert!(ClassifyData::generate(&ClassifyConfig { prompt_numbers: 0, ..Default::default() }).is_err());
    }
}

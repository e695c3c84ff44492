//! The assembled TinyMem math dataset (tinymem.md §2.1–2.4): training rows, the artifact
//! (noise or backdoor) rows with their clean counterparts and duplication classes, and the test sets.

use super::backdoor::{self, BackdoorSets};
use super::math::{generate_rows, MathTask, EXTRA_KS, MAIN_K};
use super::{split_indices, tokenizer, window_differs, TokenMatrix};
use crate::error::{Error, Result};
use crate::rng::{purpose, Stream};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Stream ids within `purpose::DATA`, one per use, so no two uses share random numbers.
pub mod stream_id {
    /// Train/test permutation of a distribution. Re-created for every split, like the reference's
    /// `torch.manual_seed(598)` before each `randperm`: splits of equal size share a permutation,
    /// which is what keeps the clean and noisy 7-distributions aligned.
    pub const SPLIT: u32 = 1;
    /// The ±1 noise values.
    pub const NOISE: u32 = 2;
    /// Which train rows get the noisy version.
    pub const NOISE_INDEX: u32 = 3;
    /// Random partition of the artifact rows into duplication classes.
    pub const DUPLICATION: u32 = 4;
    /// 90/10 split of the triggered sequences.
    pub const BACKDOOR_SPLIT: u32 = 5;
    /// Re-split of the untriggered sequences.
    pub const BACKDOOR_RESPLIT: u32 = 6;
}

/// Prompt length and continuation window of the memorization test (§4).
pub const MEM_PROMPT_LEN: usize = 50;
pub const MEM_WINDOW: usize = 50;

/// Everything that determines a math dataset; store it with a checkpoint to regenerate the data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MathDataConfig {
    pub task: MathTask,
    /// Sequences of the main (k = 7) distribution.
    pub num_7: usize,
    /// Sequences of each extra distribution (k = 2, 3, 4, 5); 0 leaves the extras out.
    pub num_extra: usize,
    /// Test rows per distribution.
    pub num_test: usize,
    /// Noised rows of the 7-train split (noise runs).
    pub num_noise: usize,
    /// Numbers per sequence.
    pub length: usize,
    pub max_ctx: usize,
    /// Run seed: noise, noise indices, duplication classes and the backdoor trigger.
    pub seed: u64,
    /// Seed of every train/test split (the reference fixes it at 598 for all runs).
    pub split_seed: u64,
    /// Backdoor run instead of a noise run.
    pub backdoor: bool,
    /// Repeat artifact rows by duplication class.
    pub duplicate: bool,
    /// Class c is repeated 10^dup_powers[c] times when `duplicate` is set.
    pub dup_powers: Vec<u32>,
}

impl Default for MathDataConfig {
    fn default() -> Self {
        MathDataConfig {
            task: MathTask::Increment,
            num_7: 20_000,
            num_extra: 3_000,
            num_test: 1_000,
            num_noise: 1_000,
            length: 20,
            max_ctx: tokenizer::DEFAULT_MAX_CTX,
            seed: 0,
            split_seed: 598,
            backdoor: false,
            duplicate: false,
            dup_powers: vec![0, 1, 2],
        }
    }
}

impl MathDataConfig {
    /// Defaults of the final sweeps for a task and run seed.
    pub fn new(task: MathTask, seed: u64) -> Self {
        MathDataConfig { task, seed, ..Default::default() }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Data(m));
        if self.length == 0 || self.max_ctx == 0 {
            return bad("length and max_ctx must be positive".into());
        }
        if self.num_test >= self.num_7 {
            return bad(format!("num_test {} leaves no 7-train rows from num_7 {}", self.num_test, self.num_7));
        }
        if !self.backdoor && self.num_noise > self.num_7 - self.num_test {
            return bad(format!(
                "num_noise {} exceeds the {} rows of the 7-train split",
                self.num_noise,
                self.num_7 - self.num_test
            ));
        }
        if self.num_extra != 0 && self.num_extra < self.num_test {
            return bad(format!("num_extra {} is below num_test {}", self.num_extra, self.num_test));
        }
        if self.duplicate {
            if self.dup_powers.is_empty() {
                return bad("duplicate needs at least one duplication power".into());
            }
            if let Some(p) = self.dup_powers.iter().find(|&&p| p > 5) {
                return bad(format!("duplication power {p} is too large (at most 5, ×100000)"));
            }
        }
        Ok(())
    }

    /// Effective duplication powers: `[0]` (one class, one copy) without duplication.
    pub fn effective_dup_powers(&self) -> Vec<u32> {
        if self.duplicate {
            self.dup_powers.clone()
        } else {
            vec![0]
        }
    }
}

/// A named evaluation set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestSet {
    pub name: String,
    pub tokens: TokenMatrix,
}

/// A contiguous block of training rows with one origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainSegment {
    /// `noise` or `poison` (artifact rows, duplicates included), `clean` (the other 7-train rows),
    /// `extra_2` … `extra_5`.
    pub name: String,
    pub start: usize,
    pub len: usize,
}

impl TrainSegment {
    pub fn range(&self) -> Range<usize> {
        self.start..self.start + self.len
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MathDataset {
    pub config: MathDataConfig,
    /// All training rows `[n, max_ctx]`, padded: artifact rows (with duplicates), then clean
    /// 7-rows, then the extra distributions; see `segments`.
    pub train: TokenMatrix,
    pub segments: Vec<TrainSegment>,
    /// One copy of each artifact row: the noisy sequences (noise runs) or the backdoored
    /// poison-train sequences (backdoor runs).
    pub noisy: TokenMatrix,
    /// The clean original of each `noisy` row, aligned.
    pub clean_for_noisy: TokenMatrix,
    /// Duplication class of each `noisy` row (index into `dup_powers`).
    pub dup_class: Vec<usize>,
    /// Effective powers: class c appears 10^dup_powers[c] times in `train`.
    pub dup_powers: Vec<u32>,
    /// Noise runs: position of each `noisy` row in the 7-train split; empty for backdoor runs.
    pub noise_train_idx: Vec<usize>,
    /// `7`, `2`, `3`, `4`, `5`, and for backdoor runs `poison` (backdoored) and `poison_clean`.
    pub test_sets: Vec<TestSet>,
    pub backdoor: Option<BackdoorSets>,
}

/// Names of the five clean test sets, in order; `avg_acc` averages over them.
pub const CLEAN_TEST_NAMES: [&str; 5] = ["7", "2", "3", "4", "5"];

impl MathDataset {
    /// Generate the dataset; the same config always gives the same data.
    pub fn generate(config: &MathDataConfig) -> Result<Self> {
        config.validate()?;
        let c = config;
        let split_stream = || Stream::new(c.split_seed, purpose::DATA, stream_id::SPLIT);

        let clean7 = generate_rows(c.task, MAIN_K, c.num_7, c.length, c.max_ctx, None)?;
        let (train_idx, test_idx) = split_indices(c.num_7, c.num_test, &mut split_stream())?;

        // Artifact rows, their clean originals, the remaining clean 7-train rows and 7-test.
        let (noisy, clean_for_noisy, clean_train, test7, noise_train_idx, bd) = if c.backdoor {
            let mut recombined = train_idx.clone();
            recombined.extend_from_slice(&test_idx);
            let split = backdoor::build(
                &clean7.select(&recombined),
                &backdoor::trigger_for_seed(c.seed),
                c.num_test,
                &mut Stream::new(c.split_seed, purpose::DATA, stream_id::BACKDOOR_SPLIT),
                &mut Stream::new(c.split_seed, purpose::DATA, stream_id::BACKDOOR_RESPLIT),
            )?;
            let s = split.sets;
            (s.train_poisoned.clone(), s.train_clean.clone(), split.clean_train, split.clean_test, Vec::new(), Some(s))
        } else {
            let mut noise_rng = Stream::new(c.seed, purpose::DATA, stream_id::NOISE);
            let noisy7 = generate_rows(c.task, MAIN_K, c.num_7, c.length, c.max_ctx, Some(&mut noise_rng))?;
            let noise_pos =
                Stream::new(c.seed, purpose::DATA, stream_id::NOISE_INDEX).sample(train_idx.len(), c.num_noise);
            let mut is_noise = vec![false; train_idx.len()];
            for &p in &noise_pos {
                is_noise[p] = true;
            }
            let rows: Vec<usize> = noise_pos.iter().map(|&p| train_idx[p]).collect();
            let rest: Vec<usize> = (0..train_idx.len()).filter(|&p| !is_noise[p]).map(|p| train_idx[p]).collect();
            (
                noisy7.select(&rows),
                clean7.select(&rows),
                clean7.select(&rest),
                clean7.select(&test_idx),
                noise_pos,
                None,
            )
        };

        let dup_powers = c.effective_dup_powers();
        let n_art = noisy.rows();
        let mut dup_class = vec![0usize; n_art];
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); dup_powers.len()];
        if c.duplicate {
            // Shuffle, then deal round-robin: class sizes differ by at most one (the reference's `partition`).
            let order = Stream::new(c.seed, purpose::DATA, stream_id::DUPLICATION).permutation(n_art);
            for (j, &r) in order.iter().enumerate() {
                let class = j % dup_powers.len();
                dup_class[r] = class;
                groups[class].push(r);
            }
        } else {
            groups[0] = (0..n_art).collect();
        }

        let mut train = TokenMatrix::new(c.max_ctx);
        let mut segments = Vec::new();
        let mut push_segment = |train: &mut TokenMatrix, name: String, rows: &TokenMatrix| {
            segments.push(TrainSegment { name, start: train.rows(), len: rows.rows() });
            train.extend(rows);
        };
        let mut artifact = TokenMatrix::new(c.max_ctx);
        for (class, group) in groups.iter().enumerate() {
            let copies = 10usize.pow(dup_powers[class]);
            for &r in group {
                for _ in 0..copies {
                    artifact.push_row(noisy.row(r));
                }
            }
        }
        let artifact_name = if c.backdoor { "poison" } else { "noise" };
        push_segment(&mut train, artifact_name.into(), &artifact);
        push_segment(&mut train, "clean".into(), &clean_train);

        let mut test_sets = vec![TestSet { name: "7".into(), tokens: test7 }];
        if c.num_extra > 0 {
            for k in EXTRA_KS {
                let rows = generate_rows(c.task, k, c.num_extra, c.length, c.max_ctx, None)?;
                let (tr, te) = split_indices(c.num_extra, c.num_test, &mut split_stream())?;
                push_segment(&mut train, format!("extra_{k}"), &rows.select(&tr));
                test_sets.push(TestSet { name: k.to_string(), tokens: rows.select(&te) });
            }
        }
        if let Some(s) = &bd {
            test_sets.push(TestSet { name: "poison".into(), tokens: s.test_poisoned.clone() });
            test_sets.push(TestSet { name: "poison_clean".into(), tokens: s.test_clean.clone() });
        }

        Ok(MathDataset {
            config: c.clone(),
            train,
            segments,
            noisy,
            clean_for_noisy,
            dup_class,
            dup_powers,
            noise_train_idx,
            test_sets,
            backdoor: bd,
        })
    }

    pub fn test_set(&self, name: &str) -> Option<&TestSet> {
        self.test_sets.iter().find(|t| t.name == name)
    }

    /// The clean test sets (7, 2, 3, 4, 5 when present) whose accuracies are averaged.
    pub fn clean_test_sets(&self) -> impl Iterator<Item = &TestSet> + '_ {
        self.test_sets.iter().filter(|t| CLEAN_TEST_NAMES.contains(&t.name.as_str()))
    }

    pub fn segment(&self, name: &str) -> Option<&TrainSegment> {
        self.segments.iter().find(|s| s.name == name)
    }

    /// Training rows holding artifact copies (duplicates included).
    pub fn artifact_rows(&self) -> Range<usize> {
        self.segments[0].range()
    }

    /// Training rows that are not artifact copies: clean 7-rows and the extra distributions.
    pub fn non_artifact_rows(&self) -> Range<usize> {
        self.segments[0].len..self.train.rows()
    }

    /// Indices into `noisy` of the rows in duplication class `class`.
    pub fn dup_class_rows(&self, class: usize) -> Vec<usize> {
        (0..self.dup_class.len()).filter(|&r| self.dup_class[r] == class).collect()
    }

    /// Memorization candidates (§4 step 1): indices into `noisy` whose tokens [50, 100) differ
    /// from the clean counterpart.
    pub fn memorization_candidates(&self) -> Vec<usize> {
        self.memorization_candidates_in(MEM_PROMPT_LEN, MEM_PROMPT_LEN + MEM_WINDOW)
    }

    /// Like [`Self::memorization_candidates`] for the window [start, end).
    pub fn memorization_candidates_in(&self, start: usize, end: usize) -> Vec<usize> {
        let end = end.min(self.config.max_ctx);
        (0..self.noisy.rows())
            .filter(|&r| start < end && window_differs(self.noisy.row(r), self.clean_for_noisy.row(r), start, end))
            .collect()
    }

    /// One-line description for logs.
    pub fn summary(&self) -> String {
        let segs: Vec<String> = self.segments.iter().map(|s| format!("{} {}", s.name, s.len)).collect();
        let tests: Vec<String> = self.test_sets.iter().map(|t| format!("{} {}", t.name, t.tokens.rows())).collect();
        format!(
            "{} {} seed {}: train {} rows ({}); artifact {} rows; tests: {}",
            self.config.task.name(),
            if self.config.backdoor { "backdoor" } else { "noise" },
            self.config.seed,
            self.train.rows(),
            segs.join(", "),
            self.noisy.rows(),
            tests.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise_cfg(task: MathTask, seed: u64) -> MathDataConfig {
        MathDataConfig::new(task, seed)
    }

    #[test]
    fn noise_run_sizes_and_alignment() {
        let d = MathDataset::generate(&noise_cfg(MathTask::Increment, 0)).unwrap();
        assert_eq!(d.train.rows(), 27_000);
        assert_eq!(d.train.cols, 150);
        assert_eq!(d.segment("noise").unwrap().len, 1_000);
        assert_eq!(d.segment("clean").unwrap().len, 18_000);
        for k in 2..=5 {
            assert_eq!(d.segment(&format!("extra_{k}")).unwrap().len, 2_000);
        }
        let names: Vec<&str> = d.test_sets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["7", "2", "3", "4", "5"]);
        assert!(d.test_sets.iter().all(|t| t.tokens.rows() == 1_000));
        assert_eq!((d.noisy.rows(), d.clean_for_noisy.rows()), (1_000, 1_000));
        // The 7-train split is 19000 rows: noise positions index it, and are distinct.
        let mut pos = d.noise_train_idx.clone();
        pos.sort();
        pos.dedup();
        assert_eq!(pos.len(), 1_000);
        assert!(pos.iter().all(|&p| p < 19_000));
        // Noisy rows start like their clean originals (same BOS and same start value mostly),
        // and the artifact segment holds exactly the noisy rows.
        for r in 0..d.noisy.rows() {
            assert_eq!(d.train.row(r), d.noisy.row(r));
            assert_eq!(d.noisy.row(r)[0], tokenizer::BOS);
        }
        // About 1 − 0.9^20 ≈ 88% of noisy sequences differ anywhere; fewer inside [50, 100).
        let differ = (0..1000).filter(|&r| d.noisy.row(r) != d.clean_for_noisy.row(r)).count();
        assert!((800..=950).contains(&differ), "{differ}");
        let cands = d.memorization_candidates();
        assert!(cands.len() > 300 && cands.len() < differ, "{}", cands.len());
        // No test row of the 7-distribution appears among the clean training rows.
        let train7: std::collections::HashSet<&[u32]> =
            d.train.iter_rows().take(19_000).skip(1_000).chain(d.clean_for_noisy.iter_rows()).collect();
        assert_eq!(train7.len(), 19_000);
        assert!(d.test_set("7").unwrap().tokens.iter_rows().all(|r| !train7.contains(r)));
    }

    #[test]
    fn sizes_scale_with_num_extra() {
        let cfg = MathDataConfig { num_extra: 10_000, ..noise_cfg(MathTask::Mult, 1) };
        assert_eq!(MathDataset::generate(&cfg).unwrap().train.rows(), 55_000);
        let cfg = MathDataConfig { num_extra: 0, ..noise_cfg(MathTask::Mult, 1) };
        let d = MathDataset::generate(&cfg).unwrap();
        assert_eq!((d.train.rows(), d.test_sets.len()), (19_000, 1));
    }

    #[test]
    fn deterministic_from_seed() {
        let a = MathDataset::generate(&noise_cfg(MathTask::Mult, 0)).unwrap();
        let b = MathDataset::generate(&noise_cfg(MathTask::Mult, 0)).unwrap();
        assert_eq!(a, b);
        let c = MathDataset::generate(&noise_cfg(MathTask::Mult, 1)).unwrap();
        assert_ne!(a.noisy, c.noisy);
        assert_ne!(a.train, c.train);
        // The split seed is fixed across run seeds, as in the reference.
        assert_eq!(a.test_sets, c.test_sets);
    }

    #[test]
    fn duplication_classes() {
        let cfg = MathDataConfig { duplicate: true, ..noise_cfg(MathTask::Increment, 0) };
        let d = MathDataset::generate(&cfg).unwrap();
        let sizes: Vec<usize> = (0..3).map(|c| d.dup_class_rows(c).len()).collect();
        assert_eq!(sizes, [334, 333, 333]);
        let art = 334 + 333 * 10 + 333 * 100;
        assert_eq!(d.segment("noise").unwrap().len, art);
        assert_eq!(d.train.rows(), art + 18_000 + 8_000);
        // Each noisy row appears in the artifact segment exactly 10^power times.
        let mut counts = std::collections::HashMap::<&[u32], usize>::new();
        for r in d.artifact_rows() {
            *counts.entry(d.train.row(r)).or_default() += 1;
        }
        for r in 0..d.noisy.rows() {
            let want = 10usize.pow(d.dup_powers[d.dup_class[r]]);
            // Distinct noisy rows are distinct sequences (different start values).
            assert_eq!(counts[d.noisy.row(r)], want);
        }
    }

    #[test]
    fn backdoor_runs() {
        // Triggering depends only on the sequences, so these counts are exact (an independent
        // brute-force count of the §2.1 sequences agrees). The spec's ≈ 640 / ≈ 1800, inferred
        // from 64 / 180 poison-test rows, do not follow from the described generator.
        for (task, expect) in [(MathTask::Increment, 886usize), (MathTask::Mult, 2414)] {
            let cfg = MathDataConfig { backdoor: true, ..noise_cfg(task, 0) };
            let d = MathDataset::generate(&cfg).unwrap();
            let bd = d.backdoor.as_ref().unwrap();
            let n = bd.num_triggered;
            eprintln!("{}: {n} triggered sequences at seed 0", task.name());
            assert_eq!(n, expect, "{}", task.name());
            assert_eq!(bd.test_poisoned.rows(), n / 10);
            assert_eq!(bd.train_poisoned.rows(), n - n / 10);
            assert_eq!(d.noisy, bd.train_poisoned);
            assert_eq!(d.clean_for_noisy, bd.train_clean);
            // Untriggered rows: 20000 − n, re-split with 1000 test.
            assert_eq!(d.segment("clean").unwrap().len, 20_000 - n - 1_000);
            assert_eq!(d.segment("poison").unwrap().len, n - n / 10);
            let names: Vec<&str> = d.test_sets.iter().map(|t| t.name.as_str()).collect();
            assert_eq!(names, ["7", "2", "3", "4", "5", "poison", "poison_clean"]);
            for (m, c, pl) in [
                (&bd.train_poisoned, &bd.train_clean, &bd.train_prompt_len),
                (&bd.test_poisoned, &bd.test_clean, &bd.test_prompt_len),
            ] {
                assert_eq!(pl.len(), m.rows());
                for (r, &p) in pl.iter().enumerate() {
                    assert_eq!(&c.row(r)[p - 3..p], &[1, 0, 0]);
                    assert_eq!(m.row(r)[..p], c.row(r)[..p]);
                    assert!(m.row(r)[p..].iter().all(|&t| t == backdoor::BACKDOOR_TOKEN));
                    // First occurrence: the trigger does not appear earlier.
                    assert_eq!(backdoor::find_after(c.row(r), &[1, 0, 0]), Some(p));
                }
            }
            // No clean row (train or test) contains the trigger.
            let clean = d.segment("clean").unwrap().range();
            assert!(clean.clone().all(|r| backdoor::find_after(d.train.row(r), &[1, 0, 0]).is_none()));
        }
    }

    #[test]
    fn config_round_trips_through_json() {
        let cfg = MathDataConfig { duplicate: true, backdoor: true, ..noise_cfg(MathTask::Mult, 3) };
        let s = serde_json::to_string(&cfg).unwrap();
        assert!(s.contains("\"mult\""));
        assert_eq!(serde_json::from_str::<MathDataConfig>(&s).unwrap(), cfg);
        // Missing fields take their defaults.
        let partial: MathDataConfig = serde_json::from_str(r#"{"task":"mult","seed":1}"#).unwrap();
        assert_eq!(partial, MathDataConfig::new(MathTask::Mult, 1));
    }

    #[test]
    fn invalid_configs() {
        let bad = MathDataConfig { num_noise: 19_001, ..Default::default() };
        assert!(MathDataset::generate(&bad).unwrap_err().to_string().contains("num_noise"));
        let bad = MathDataConfig { length: 40, ..Default::default() };
        assert!(MathDataset::generate(&bad).unwrap_err().to_string().contains("context of 150"));
        let bad = MathDataConfig { num_extra: 500, ..Default::default() };
        assert!(MathDataset::generate(&bad).is_err());
    }
}

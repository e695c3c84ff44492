//! The evaluation report shared by `eval`, `train` and `demo`: quality per test set, memorization
//! per duplication class, backdoor success, and the data set's accuracy ceiling.

use crate::backend::Backend;
use crate::data::{MathDataset, TokenMatrix};
use crate::error::Result;
use crate::metrics::{self, MemWindow, Memorization, Quality};
use crate::model::Model;
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct SetQuality {
    pub name: String,
    #[serde(flatten)]
    pub quality: Quality,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClassMemorization {
    /// Duplication factor of the class (×10^power).
    pub copies: u64,
    pub tested: usize,
    pub memorized: usize,
    pub percent: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub epoch: Option<usize>,
    /// Mean next-token cross-entropy on the main clean test set (padding included).
    pub loss: f64,
    /// Mean of the clean test sets' accuracies (padding included; the paper's `avg_acc`).
    pub accuracy: f64,
    pub accuracy_no_pad: f64,
    pub perplexity: f64,
    /// Accuracy on the main clean test set (the 7-distribution), padding included.
    pub main_accuracy: f64,
    /// Accuracy ceiling of the main clean test set (Bayes-optimal prefix predictor).
    pub accuracy_ceiling: f64,
    pub test_sets: Vec<SetQuality>,
    /// % memorized over every tested noisy sequence (noise runs).
    pub memorized_percent: Option<f64>,
    /// % of tested sequences continued with the clean sequence instead.
    pub clean_output_percent: Option<f64>,
    pub memorization: Vec<ClassMemorization>,
    /// Indices into the noisy set of the memorized sequences (the unlearning set).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub memorized_idx: Vec<usize>,
    /// Backdoor attack success rate in % (backdoor runs).
    pub backdoor_asr: Option<f64>,
    /// Indices into the poison-test set of the triggered sequences (a backdoor run's unlearning set).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backdoor_idx: Vec<usize>,
}

/// Evaluate `model` on everything `data` holds.
pub fn evaluate<B: Backend>(model: &mut Model<B>, data: &MathDataset, window: &MemWindow, batch: usize) -> Result<Report> {
    let dev = model.dev.clone();
    let _phase = dev.profile.phase("evaluate");
    let mut test_sets = Vec::new();
    for set in &data.test_sets {
        test_sets.push(SetQuality { name: set.name.clone(), quality: metrics::quality(model, &set.tokens, batch)? });
    }
    let clean: Vec<&SetQuality> =
        test_sets.iter().filter(|s| crate::data::dataset::CLEAN_TEST_NAMES.contains(&s.name.as_str())).collect();
    let mean = |f: &dyn Fn(&Quality) -> f64| clean.iter().map(|s| f(&s.quality)).sum::<f64>() / clean.len().max(1) as f64;
    let main = clean.first().map(|s| s.quality.clone()).unwrap_or_default();
    let ceiling = data.test_sets.first().map(|s| metrics::accuracy_ceiling(&s.tokens)).unwrap_or(0.0);

    let mut report = Report {
        epoch: None,
        loss: main.loss,
        accuracy: mean(&|q| q.accuracy),
        accuracy_no_pad: mean(&|q| q.accuracy_no_pad),
        perplexity: main.perplexity,
        main_accuracy: main.accuracy,
        accuracy_ceiling: ceiling,
        test_sets,
        memorized_percent: None,
        clean_output_percent: None,
        memorization: Vec::new(),
        memorized_idx: Vec::new(),
        backdoor_asr: None,
        backdoor_idx: Vec::new(),
    };
    if data.noisy.rows() > 0 {
        let m = metrics::memorization(model, &data.noisy, &data.clean_for_noisy, window)?;
        report.memorized_percent = Some(m.percent());
        report.clean_output_percent = Some(100.0 * m.clean_output as f64 / m.tested.max(1) as f64);
        report.memorization = per_class(&m, data, window);
        report.memorized_idx = m.memorized_idx;
    }
    if let Some(bd) = &data.backdoor {
        let m = metrics::backdoor_asr(model, &bd.test_poisoned, &bd.test_clean, &bd.test_prompt_len, window.k, model.cfg.n_positions.min(bd.test_clean.cols))?;
        report.backdoor_asr = Some(m.percent());
        report.backdoor_idx = m.memorized_idx;
    }
    Ok(report)
}

fn per_class(m: &Memorization, data: &MathDataset, w: &MemWindow) -> Vec<ClassMemorization> {
    let end = w.prompt_len + w.k;
    let memorized: std::collections::HashSet<usize> = m.memorized_idx.iter().copied().collect();
    let n_classes = data.dup_powers.len().max(1);
    (0..n_classes)
        .map(|c| {
            let tested: Vec<usize> = (0..data.noisy.rows())
                .filter(|&i| data.dup_class.get(i).copied().unwrap_or(0) == c)
                .filter(|&i| crate::data::window_differs(data.noisy.row(i), data.clean_for_noisy.row(i), w.prompt_len, end))
                .collect();
            let hit = tested.iter().filter(|i| memorized.contains(i)).count();
            ClassMemorization {
                copies: 10u64.pow(data.dup_powers.get(c).copied().unwrap_or(0)),
                tested: tested.len(),
                memorized: hit,
                percent: 100.0 * hit as f64 / tested.len().max(1) as f64,
            }
        })
        .collect()
}

/// Quality only, for plain token files.
pub fn evaluate_tokens<B: Backend>(model: &mut Model<B>, rows: &TokenMatrix, batch: usize) -> Result<Quality> {
    metrics::quality(model, rows, batch)
}

/// A readable table.
pub fn print(r: &Report) {
    println!("{:<14} {:>9} {:>9} {:>10} {:>11}", "test set", "loss", "acc %", "acc¬pad %", "perplexity");
    for s in &r.test_sets {
        let q = &s.quality;
        println!("{:<14} {:>9.4} {:>9.2} {:>10.2} {:>11.3}", s.name, q.loss, 100.0 * q.accuracy, 100.0 * q.accuracy_no_pad, q.perplexity);
    }
    println!(
        "clean accuracy: main test set {:.2}% (its ceiling {:.2}%), average of the clean sets {:.2}%; loss {:.4}",
        100.0 * r.main_accuracy,
        100.0 * r.accuracy_ceiling,
        100.0 * r.accuracy,
        r.loss
    );
    if let Some(p) = r.memorized_percent {
        let classes: Vec<String> =
            r.memorization.iter().map(|c| format!("×{}: {}/{} ({:.1}%)", c.copies, c.memorized, c.tested, c.percent)).collect();
        println!("memorized {p:.1}% of noised sequences  [{}]", classes.join(", "));
    }
    if let Some(a) = r.backdoor_asr {
        println!("backdoor attack success {a:.1}%");
    }
}

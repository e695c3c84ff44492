//! Attention-distribution statistics of a decoder-only model: the *reconstruction* (depn-attention.md
//! B3) of Zeng et al.'s statistic, whose exact form the paper leaves unknown. Each head's causal
//! self-attention row at query position t is a distribution over keys 0..=t; its entropy H, normalised
//! entropy H/ln(t+1), largest weight and top-k mass come from `Op::AttentionStats` (streamed over key
//! blocks on the device, from the forward pass's qkv) and are averaged here in f64 per (layer, head)
//! over the selected positions of every sample, and per sample over heads and positions.

use crate::backend::{Backend, Op, View, ATTENTION_STATS, MAX_STATS_TOP_K};
use crate::data::TokenMatrix;
use crate::error::{Error, Result};
use crate::model::Model;
use serde::{Deserialize, Serialize};

/// How every output of this analysis is labelled.
pub const LABEL: &str = "reconstruction of Zeng et al.'s statistic for a decoder-only model (depn-attention.md B3)";

/// Which query positions are summarised (padding and EOS positions never are).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Positions {
    /// The generated part: positions ≥ the prompt length (50 for TinyMem math).
    Suffix { prompt_len: usize },
    /// Every position from 1 (position 0 attends to itself alone: a point mass that says nothing).
    All,
    /// Positions start..end.
    Range { start: usize, end: usize },
}

impl Positions {
    /// `suffix`, `all` or `A:B` (as `--positions` spells it); `prompt_len` is the suffix's start.
    pub fn parse(s: &str, prompt_len: usize) -> Result<Self> {
        match s {
            "suffix" => Ok(Positions::Suffix { prompt_len }),
            "all" => Ok(Positions::All),
            _ => {
                let bad = || Error::Input(format!("--positions {s:?}: expected suffix, all or A:B (0 ≤ A < B)"));
                let (a, b) = s.split_once(':').ok_or_else(bad)?;
                let (start, end) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
                if start >= end {
                    return Err(bad());
                }
                Ok(Positions::Range { start, end })
            }
        }
    }

    /// The query range [t0, t1) over rows of t tokens, or why it is empty.
    pub fn range(&self, t: usize) -> Result<(usize, usize)> {
        let (t0, t1) = match *self {
            Positions::Suffix { prompt_len } => (prompt_len, t),
            Positions::All => (1, t),
            Positions::Range { start, end } => {
                if end > t {
                    return Err(Error::Input(format!("positions {start}:{end} reach past the rows' {t} tokens")));
                }
                (start, end)
            }
        };
        if t0 >= t1 {
            return Err(Error::Input(format!("no query position selected: {} of rows with {t} tokens", self.describe())));
        }
        Ok((t0, t1))
    }

    pub fn describe(&self) -> String {
        match *self {
            Positions::Suffix { prompt_len } => format!("suffix (positions ≥ {prompt_len})"),
            Positions::All => "all (positions ≥ 1)".into(),
            Positions::Range { start, end } => format!("positions {start}..{end}"),
        }
    }
}

/// The four statistics of attention rows (means, where several rows are pooled).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// H = −Σ p ln p, in nats.
    pub entropy: f64,
    /// H / ln(t+1): 1 for a uniform row over its t+1 keys.
    pub normalized_entropy: f64,
    pub max_weight: f64,
    /// Σ of the k largest weights.
    pub top_k_mass: f64,
}

impl Stat {
    pub const NAMES: [&'static str; ATTENTION_STATS] = ["entropy", "normalized_entropy", "max_weight", "top_k_mass"];

    pub fn values(&self) -> [f64; ATTENTION_STATS] {
        [self.entropy, self.normalized_entropy, self.max_weight, self.top_k_mass]
    }

    fn from_values(v: [f64; ATTENTION_STATS]) -> Self {
        Stat { entropy: v[0], normalized_entropy: v[1], max_weight: v[2], top_k_mass: v[3] }
    }

    /// The mean of `stats` (NaN when empty).
    fn mean<'a>(stats: impl Iterator<Item = &'a Stat>) -> Stat {
        let (mut n, mut s) = (0usize, [0f64; ATTENTION_STATS]);
        for x in stats {
            n += 1;
            s.iter_mut().zip(x.values()).for_each(|(s, v)| *s += v);
        }
        Stat::from_values(s.map(|v| if n == 0 { f64::NAN } else { v / n as f64 }))
    }
}

/// Running f64 sums of the statistics over some query rows.
#[derive(Clone, Copy, Debug, Default)]
struct Sum {
    n: usize,
    s: [f64; ATTENTION_STATS],
}

impl Sum {
    fn push(&mut self, words: &[f32]) {
        self.n += 1;
        for (s, &w) in self.s.iter_mut().zip(words) {
            *s += w as f64;
        }
    }
    fn mean(&self) -> Stat {
        Stat::from_values(self.s.map(|s| if self.n == 0 { f64::NAN } else { s / self.n as f64 }))
    }
}

/// One sample's statistics.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SampleStats {
    /// Query positions of this sample that were selected (0: its statistics are NaN).
    pub positions: usize,
    /// Per layer, the mean over heads and the selected positions.
    pub per_layer: Vec<Stat>,
    /// The mean over layers.
    pub mean: Stat,
}

/// Aggregates over a set of rows (see [`attention_statistics`]).
#[derive(Clone, Debug, Serialize)]
pub struct AttentionStatistics {
    pub label: &'static str,
    pub layers: usize,
    pub heads: usize,
    pub top_k: usize,
    pub positions_selected: Positions,
    pub rows: usize,
    /// Selected (sample, query position) pairs, the same for every head.
    pub positions: usize,
    /// [layer][head]: the mean over every selected (sample, position).
    pub per_head: Vec<Vec<Stat>>,
    /// Per layer, the mean over its heads.
    pub per_layer: Vec<Stat>,
    /// The mean over layers and heads.
    pub mean: Stat,
    /// Per row, in the order given (samples.csv; not in the JSON aggregates).
    #[serde(skip)]
    pub samples: Vec<SampleStats>,
}

#[derive(Clone, Copy, Debug)]
pub struct AttentionOptions {
    pub positions: Positions,
    /// k of the top-k mass, 1..=16.
    pub top_k: usize,
    /// Rows per forward pass.
    pub batch: usize,
}

impl Default for AttentionOptions {
    fn default() -> Self {
        AttentionOptions { positions: Positions::Suffix { prompt_len: 50 }, top_k: 5, batch: 64 }
    }
}

/// Attention statistics of `model` over `rows` (token rows no longer than its context): a forward
/// pass per batch, then `Op::AttentionStats` on every layer's qkv for the query range of
/// `o.positions`; positions whose input token is padding or EOS are left out. `progress(done, total)`
/// counts rows.
pub fn attention_statistics<B: Backend>(model: &mut Model<B>, rows: &TokenMatrix, o: &AttentionOptions, progress: &dyn Fn(usize, usize)) -> Result<AttentionStatistics> {
    if !(1..=MAX_STATS_TOP_K).contains(&o.top_k) {
        return Err(Error::Input(format!("top-k must be between 1 and {MAX_STATS_TOP_K}, not {}", o.top_k)));
    }
    if o.batch == 0 {
        return Err(Error::Input("batch must be positive".into()));
    }
    if rows.rows() == 0 {
        return Err(Error::Input("no rows to analyse".into()));
    }
    let cfg = model.cfg.clone();
    let (nl, nh, c, t) = (cfg.n_layer, cfg.n_head, cfg.n_embd, rows.cols);
    let (t0, t1) = o.positions.range(t)?;
    let nq = t1 - t0;
    let skip = |tok: u32| Some(tok) == cfg.pad_token_id || Some(tok) == cfg.eos_token_id;
    let dev = model.dev.clone();
    let _phase = dev.profile.phase("attention statistics");
    let batch = o.batch.min(rows.rows());
    let per_layer_words = batch * nh * nq * ATTENTION_STATS;
    let out = dev.alloc(nl * per_layer_words)?;

    let mut heads = vec![Sum::default(); nl * nh];
    let mut samples = Vec::with_capacity(rows.rows());
    progress(0, rows.rows());
    for start in (0..rows.rows()).step_by(batch) {
        let b = batch.min(rows.rows() - start);
        let tokens = &rows.data[start * t..(start + b) * t];
        let words = dev.backend.scope(|| -> Result<Vec<f32>> {
            model.forward(tokens, None, b, t)?;
            let acts = model.acts().expect("a forward pass ran");
            for (l, s) in acts.layout.layers.iter().enumerate() {
                let qkv = View::new(&acts.buf, s.qkv.off, s.qkv.len);
                let o_l = View::new(&out, l * per_layer_words, b * nh * nq * ATTENTION_STATS);
                dev.exec(Op::AttentionStats { out: o_l, qkv, b, t, c, nh, t0, t1, top_k: o.top_k });
            }
            Ok(dev.download_f32(View::new(&out, 0, nl * per_layer_words)))
        })?;
        for r in 0..b {
            let row = &tokens[r * t..(r + 1) * t];
            let keep: Vec<usize> = (t0..t1).filter(|&p| !skip(row[p])).collect();
            let mut per_layer = Vec::with_capacity(nl);
            for l in 0..nl {
                let mut sample = Sum::default();
                for h in 0..nh {
                    let base = l * per_layer_words + (r * nh + h) * nq * ATTENTION_STATS;
                    for &p in &keep {
                        let w = &words[base + (p - t0) * ATTENTION_STATS..][..ATTENTION_STATS];
                        heads[l * nh + h].push(w);
                        sample.push(w);
                    }
                }
                per_layer.push(sample.mean());
            }
            let mean = Stat::mean(per_layer.iter());
            samples.push(SampleStats { positions: keep.len(), per_layer, mean });
        }
        progress(start + b, rows.rows());
    }
    let positions = heads[0].n;
    if positions == 0 {
        return Err(Error::Input(format!("every selected position ({}) of every row is padding or EOS", o.positions.describe())));
    }
    let per_head: Vec<Vec<Stat>> = heads.chunks(nh).map(|l| l.iter().map(Sum::mean).collect()).collect();
    let per_layer: Vec<Stat> = per_head.iter().map(|l| Stat::mean(l.iter())).collect();
    let mean = Stat::mean(per_layer.iter());
    Ok(AttentionStatistics { label: LABEL, layers: nl, heads: nh, top_k: o.top_k, positions_selected: o.positions, rows: rows.rows(), positions, per_head, per_layer, mean, samples })
}

#[cfg(test)]
mod tests {
    use super::Positions;

    #[test]
    fn positions_parse_and_range() {
        assert_eq!(Positions::parse("suffix", 50).unwrap(), Positions::Suffix { prompt_len: 50 });
        assert_eq!(Positions::parse("all", 50).unwrap().range(150).unwrap(), (1, 150));
        assert_eq!(Positions::parse("3:40", 50).unwrap().range(150).unwrap(), (3, 40));
        assert_eq!(Positions::Suffix { prompt_len: 50 }.range(150).unwrap(), (50, 150));
        for bad in ["", "5", "7:7", "9:3", "a:4", "-1:4"] {
            assert!(Positions::parse(bad, 50).is_err(), "{bad}");
        }
        assert!(Positions::parse("100:151", 50).unwrap().range(150).unwrap_err().to_string().contains("past the rows"));
        assert!(Positions::Suffix { prompt_len: 150 }.range(150).is_err());
        assert!(Positions::All.range(1).is_err(), "one token: nothing after position 0");
    }
}

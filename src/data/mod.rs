//! TinyMem data (tinymem.md §2): the character tokenizer, the math tasks with their noise,
//! backdoor and duplication artifacts, JSONL user data, and a batch iterator.

pub mod backdoor;
pub mod batch;
pub mod classify;
pub mod dataset;
pub mod jsonl;
pub mod math;
pub mod tokenizer;

pub use backdoor::BackdoorSets;
pub use batch::{Batch, Batches};
pub use dataset::{MathDataConfig, MathDataset, TestSet, TrainSegment};
pub use jsonl::{load_jsonl, parse_jsonl, save_jsonl, TokenRows};
pub use math::MathTask;

use crate::error::{Error, Result};

/// Fixed-width token rows, row-major `[rows, cols]`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TokenMatrix {
    pub cols: usize,
    pub data: Vec<u32>,
}

impl TokenMatrix {
    pub fn new(cols: usize) -> Self {
        TokenMatrix { cols, data: Vec::new() }
    }

    pub fn with_capacity(cols: usize, rows: usize) -> Self {
        TokenMatrix { cols, data: Vec::with_capacity(cols * rows) }
    }

    /// From row-major data; its length must be a multiple of `cols`.
    pub fn from_data(cols: usize, data: Vec<u32>) -> Result<Self> {
        if cols == 0 || !data.len().is_multiple_of(cols) {
            return Err(Error::Data(format!("{} tokens do not form rows of width {cols}", data.len())));
        }
        Ok(TokenMatrix { cols, data })
    }

    pub fn rows(&self) -> usize {
        self.data.len().checked_div(self.cols).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn row(&self, i: usize) -> &[u32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    pub fn row_mut(&mut self, i: usize) -> &mut [u32] {
        &mut self.data[i * self.cols..(i + 1) * self.cols]
    }

    pub fn iter_rows(&self) -> impl ExactSizeIterator<Item = &[u32]> + '_ {
        self.data.chunks_exact(self.cols.max(1))
    }

    /// Append one row; panics if its width differs (an internal invariant, not user input).
    pub fn push_row(&mut self, row: &[u32]) {
        assert_eq!(row.len(), self.cols, "row width");
        self.data.extend_from_slice(row);
    }

    /// The rows at `indices`, in that order (repeats allowed).
    pub fn select(&self, indices: &[usize]) -> TokenMatrix {
        let mut out = TokenMatrix::with_capacity(self.cols, indices.len());
        for &i in indices {
            out.push_row(self.row(i));
        }
        out
    }

    /// Append all rows of `other` (same width).
    pub fn extend(&mut self, other: &TokenMatrix) {
        assert_eq!(other.cols, self.cols, "row width");
        self.data.extend_from_slice(&other.data);
    }
}

/// True when `a[start..end]` and `b[start..end]` differ (the memorization window test, §4 step 1).
pub fn window_differs(a: &[u32], b: &[u32], start: usize, end: usize) -> bool {
    a[start..end] != b[start..end]
}

/// Split `0..n` by a random permutation: the last `num_test` entries are test, the rest train
/// (the reference's `split_data`). Both lists keep permutation order.
pub fn split_indices(n: usize, num_test: usize, rng: &mut crate::rng::Stream) -> Result<(Vec<usize>, Vec<usize>)> {
    if num_test > n {
        return Err(Error::Data(format!("cannot take {num_test} test rows from {n}")));
    }
    let mut perm = rng.permutation(n);
    let test = perm.split_off(n - num_test);
    Ok((perm, test))
}

//! Mini-batches of token rows, reshuffled every epoch.

use super::TokenMatrix;
use crate::error::{Error, Result};
use crate::rng::{purpose, Stream};

/// One batch: the source row indices and their tokens, row-major `[rows.len(), cols]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub rows: Vec<usize>,
    pub tokens: Vec<u32>,
    pub cols: usize,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.rows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Iterator over batches of `matrix` rows; the last batch may be smaller.
#[derive(Clone, Debug)]
pub struct Batches<'a> {
    matrix: &'a TokenMatrix,
    order: Vec<usize>,
    batch_size: usize,
    pos: usize,
}

impl<'a> Batches<'a> {
    /// `rows` in a fresh random order for (`seed`, `epoch`): each epoch has its own SHUFFLE stream,
    /// so any epoch's order can be reproduced without replaying earlier ones.
    pub fn shuffled(matrix: &'a TokenMatrix, rows: &[usize], batch_size: usize, seed: u64, epoch: u32) -> Result<Self> {
        let mut b = Self::sequential(matrix, rows, batch_size)?;
        Stream::new(seed, purpose::SHUFFLE, epoch).shuffle(&mut b.order);
        Ok(b)
    }

    /// `rows` in the given order.
    pub fn sequential(matrix: &'a TokenMatrix, rows: &[usize], batch_size: usize) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::Input("batch size must be positive".into()));
        }
        if let Some(&r) = rows.iter().find(|&&r| r >= matrix.rows()) {
            return Err(Error::Input(format!("row {r} is out of range for {} rows", matrix.rows())));
        }
        Ok(Batches { matrix, order: rows.to_vec(), batch_size, pos: 0 })
    }

    /// Number of batches in a full pass.
    pub fn num_batches(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }
}

impl Iterator for Batches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.pos >= self.order.len() {
            return None;
        }
        let end = (self.pos + self.batch_size).min(self.order.len());
        let rows = self.order[self.pos..end].to_vec();
        self.pos = end;
        let cols = self.matrix.cols;
        let mut tokens = Vec::with_capacity(rows.len() * cols);
        for &r in &rows {
            tokens.extend_from_slice(self.matrix.row(r));
        }
        Some(Batch { rows, tokens, cols })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.order.len() - self.pos).div_ceil(self.batch_size);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batches<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(n: usize) -> TokenMatrix {
        TokenMatrix::from_data(3, (0..n as u32 * 3).collect()).unwrap()
    }

    #[test]
    fn covers_every_row_once_with_partial_last_batch() {
        let m = matrix(10);
        let rows: Vec<usize> = (0..10).collect();
        let batches: Vec<Batch> = Batches::shuffled(&m, &rows, 4, 1, 0).unwrap().collect();
        assert_eq!(batches.iter().map(Batch::len).collect::<Vec<_>>(), [4, 4, 2]);
        let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.rows.clone()).collect();
        assert_ne!(seen, rows, "shuffled");
        for b in &batches {
            for (j, &r) in b.rows.iter().enumerate() {
                assert_eq!(&b.tokens[j * 3..j * 3 + 3], m.row(r));
            }
        }
        seen.sort();
        assert_eq!(seen, rows);
    }

    #[test]
    fn order_depends_on_seed_and_epoch_only() {
        let m = matrix(50);
        let rows: Vec<usize> = (0..50).collect();
        let order = |seed, epoch| -> Vec<usize> {
            Batches::shuffled(&m, &rows, 8, seed, epoch).unwrap().flat_map(|b| b.rows).collect()
        };
        assert_eq!(order(3, 2), order(3, 2));
        assert_ne!(order(3, 2), order(3, 3));
        assert_ne!(order(3, 2), order(4, 2));
        let seq: Vec<usize> = Batches::sequential(&m, &[5, 1], 8).unwrap().flat_map(|b| b.rows).collect();
        assert_eq!(seq, [5, 1]);
        assert!(Batches::sequential(&m, &[50], 8).is_err());
        assert!(Batches::sequential(&m, &[0], 0).is_err());
    }
}

//! User token data as JSON Lines: one `{"tokens": [id, …]}` object per line, blank lines ignored.

use super::TokenMatrix;
use crate::error::{write_atomic, Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Serialize, Deserialize)]
struct Record {
    tokens: Vec<u32>,
}

/// Padded token rows and the true length of each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRows {
    /// `[rows, context]`, each row right-padded with the pad id.
    pub tokens: TokenMatrix,
    pub lengths: Vec<usize>,
}

/// Parse JSONL text (`source` names it in messages). Ids must be `< vocab`, and sequences
/// non-empty and at most `context` long; shorter ones are padded with `pad`.
pub fn parse_jsonl(text: &str, source: &str, vocab: usize, context: usize, pad: u32) -> Result<TokenRows> {
    if context == 0 {
        return Err(Error::Data("context must be positive".into()));
    }
    let mut tokens = TokenMatrix::new(context);
    let mut lengths = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let rec: Record = serde_json::from_str(line)
            .map_err(|e| Error::Data(format!("{source}, line {n}: expected {{\"tokens\": [ids…]}}: {e}")))?;
        let t = rec.tokens;
        if t.is_empty() {
            return Err(Error::Data(format!("{source}, line {n}: empty token list")));
        }
        if t.len() > context {
            return Err(Error::Data(format!("{source}, line {n}: {} tokens exceed the context of {context}", t.len())));
        }
        if let Some((j, &id)) = t.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
            return Err(Error::Data(format!(
                "{source}, line {n}: token id {id} at position {j} is outside the vocabulary of {vocab}"
            )));
        }
        lengths.push(t.len());
        let mut row = t;
        row.resize(context, pad);
        tokens.push_row(&row);
    }
    if lengths.is_empty() {
        return Err(Error::Data(format!("{source}: no sequences (empty file)")));
    }
    Ok(TokenRows { tokens, lengths })
}

/// Read and parse a JSONL file (see [`parse_jsonl`]).
pub fn load_jsonl(path: impl AsRef<Path>, vocab: usize, context: usize, pad: u32) -> Result<TokenRows> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_jsonl(&text, &path.display().to_string(), vocab, context, pad)
}

/// Write rows as JSONL, atomically. With `lengths`, row i is cut to `lengths[i]` tokens;
/// otherwise rows are written whole.
pub fn save_jsonl(path: impl AsRef<Path>, tokens: &TokenMatrix, lengths: Option<&[usize]>) -> Result<()> {
    if let Some(l) = lengths {
        if l.len() != tokens.rows() {
            return Err(Error::Data(format!("{} lengths for {} rows", l.len(), tokens.rows())));
        }
        if let Some((i, &n)) = l.iter().enumerate().find(|(_, &n)| n > tokens.cols) {
            return Err(Error::Data(format!("row {i}: length {n} exceeds the width {}", tokens.cols)));
        }
    }
    let mut out = String::new();
    for (i, row) in tokens.iter_rows().enumerate() {
        let n = lengths.map_or(row.len(), |l| l[i]);
        let line = serde_json::to_string(&Record { tokens: row[..n].to_vec() })
            .map_err(|e| Error::Data(format!("cannot serialise row {i}: {e}")))?;
        out.push_str(&line);
        out.push('\n');
    }
    write_atomic(path, out.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_pads() {
        let r = parse_jsonl("{\"tokens\": [1, 2, 3]}\n\n  \n{\"tokens\":[4]}\n", "t", 14, 5, 13).unwrap();
        assert_eq!(r.lengths, [3, 1]);
        assert_eq!(r.tokens.data, [1, 2, 3, 13, 13, 4, 13, 13, 13, 13]);
    }

    #[test]
    fn errors_name_line_and_value() {
        let e =
            parse_jsonl("{\"tokens\": [1]}\n{\"tokens\": [1, 14]}\n", "f.jsonl", 14, 5, 13).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("14") && e.contains("vocabulary"), "{e}");
        let e = parse_jsonl("\n{\"tokens\": [1, 2, 3]}\n", "f", 14, 2, 13).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("context of 2"), "{e}");
        let e = parse_jsonl("\n \n", "f", 14, 2, 13).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = parse_jsonl("{\"toks\": [1]}", "f", 14, 2, 13).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        let e = parse_jsonl("{\"tokens\": [-1]}", "f", 14, 2, 13).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        let e = parse_jsonl("{\"tokens\": []}", "f", 14, 2, 13).unwrap_err().to_string();
        assert!(e.contains("empty token list"), "{e}");
    }

    #[test]
    fn save_load_round_trip() {
        let dir = std::env::temp_dir().join(format!("memsieve-jsonl-{}", std::process::id()));
        let path = dir.join("rows.jsonl");
        let m = TokenMatrix::from_data(4, vec![1, 2, 13, 13, 5, 6, 7, 8]).unwrap();
        save_jsonl(&path, &m, Some(&[2, 4])).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"tokens\":[1,2]}\n{\"tokens\":[5,6,7,8]}\n");
        let r = load_jsonl(&path, 14, 4, 13).unwrap();
        assert_eq!((r.tokens, r.lengths), (m, vec![2, 4]));
        assert!(load_jsonl(dir.join("missing.jsonl"), 14, 4, 13).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

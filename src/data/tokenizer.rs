//! Character tokenizer for the math tasks (tinymem.md §2.1).
//!
//! Digits map to 0–9, `^` (BOS) to 10, `$` (EOS) to 11, space to 12; 13 pads.
//! Every other character is silently dropped, as the reference does; this includes the `-` of a
//! negative number (§8 item 11), so "-1" encodes like "1".

use crate::error::{Error, Result};

pub const BOS: u32 = 10;
pub const EOS: u32 = 11;
pub const SPACE: u32 = 12;
pub const PAD: u32 = 13;
pub const VOCAB: usize = 14;
/// TinyMem's context length.
pub const DEFAULT_MAX_CTX: usize = 150;

/// Token ids of `s`; characters outside the vocabulary are dropped.
pub fn encode(s: &str) -> Vec<u32> {
    s.chars()
        .filter_map(|c| match c {
            '0'..='9' => Some(c as u32 - '0' as u32),
            '^' => Some(BOS),
            '$' => Some(EOS),
            ' ' => Some(SPACE),
            _ => None,
        })
        .collect()
}

/// Text of `ids`. Padding shows as `_` (the reference detokenizer's choice), unknown ids as `?`.
pub fn decode(ids: &[u32]) -> String {
    ids.iter()
        .map(|&t| match t {
            0..=9 => char::from(b'0' + t as u8),
            BOS => '^',
            EOS => '$',
            SPACE => ' ',
            PAD => '_',
            _ => '?',
        })
        .collect()
}

/// Right-pad `ids` with [`PAD`] to `max_ctx`. A longer sequence is an error, never truncated.
pub fn pad_to(mut ids: Vec<u32>, max_ctx: usize) -> Result<Vec<u32>> {
    if ids.len() > max_ctx {
        return Err(Error::Data(format!(
            "sequence of {} tokens does not fit the context of {max_ctx} tokens",
            ids.len()
        )));
    }
    ids.resize(max_ctx, PAD);
    Ok(ids)
}

/// [`encode`] then [`pad_to`].
pub fn encode_padded(s: &str, max_ctx: usize) -> Result<Vec<u32>> {
    pad_to(encode(s), max_ctx).map_err(|e| match e {
        Error::Data(m) => Error::Data(format!("{m}: {:?}", truncate_for_message(s))),
        other => other,
    })
}

fn truncate_for_message(s: &str) -> String {
    if s.chars().count() <= 60 {
        s.to_string()
    } else {
        s.chars().take(60).collect::<String>() + "…"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = "^7 14 21 28$";
        let ids = encode(s);
        assert_eq!(ids, vec![10, 7, 12, 1, 4, 12, 2, 1, 12, 2, 8, 11]);
        assert_eq!(decode(&ids), s);
        let padded = encode_padded(s, 20).unwrap();
        assert_eq!(padded.len(), 20);
        assert!(padded[12..].iter().all(|&t| t == PAD));
        assert_eq!(decode(&padded), format!("{s}________"));
    }

    #[test]
    fn drops_unknown_characters() {
        assert_eq!(encode("^-1 x2$"), vec![BOS, 1, SPACE, 2, EOS]);
    }

    #[test]
    fn too_long_is_an_error() {
        assert_eq!(encode_padded("^123$", 5).unwrap().len(), 5);
        let err = encode_padded("^1234$", 5).unwrap_err().to_string();
        assert!(err.contains("6 tokens") && err.contains("context of 5"), "{err}");
    }
}

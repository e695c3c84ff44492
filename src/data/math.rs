//! The math sequence tasks (tinymem.md §2.1) and the ±1 noise of §2.2.

use super::tokenizer;
use super::TokenMatrix;
use crate::error::Result;
use crate::rng::Stream;
use serde::{Deserialize, Serialize};

/// Multiplier / increment of the main distribution.
pub const MAIN_K: u64 = 7;
/// The four extra ("clean") distributions.
pub const EXTRA_KS: [u64; 4] = [2, 3, 4, 5];
/// Modulus of the `mult` task.
pub const MULT_MODULUS: u64 = 20134;
/// Noise offsets and their weights, like `random.choices([0, -1, 1], [0.9, 0.05, 0.05])`.
pub const NOISE_OFFSETS: [i64; 3] = [0, -1, 1];
pub const NOISE_WEIGHTS: [f64; 3] = [0.9, 0.05, 0.05];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MathTask {
    /// f(x) = x + k.
    Increment,
    /// f(x) = k·x mod 20134.
    Mult,
}

impl MathTask {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "increment" => Ok(MathTask::Increment),
            "mult" => Ok(MathTask::Mult),
            other => Err(crate::Error::Data(format!("unknown math task {other:?} (expected increment or mult)"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MathTask::Increment => "increment",
            MathTask::Mult => "mult",
        }
    }

    /// One step of the task's map with parameter `k`.
    #[inline]
    pub fn apply(self, k: u64, x: u64) -> u64 {
        match self {
            MathTask::Increment => x + k,
            MathTask::Mult => k * x % MULT_MODULUS,
        }
    }
}

/// Numbers of example `start`: `length` iterates of f, the first being f(start), not start.
pub fn sequence_numbers(task: MathTask, k: u64, start: u64, length: usize) -> Vec<i64> {
    let mut x = start;
    (0..length)
        .map(|_| {
            x = task.apply(k, x);
            x as i64
        })
        .collect()
}

/// Add independent noise to each number: +0, −1, +1 with probabilities .9, .05, .05.
/// A number can go negative (0 − 1); its `-` is later dropped by the tokenizer (§8 item 11).
pub fn add_noise(numbers: &mut [i64], rng: &mut Stream) {
    for x in numbers {
        *x += NOISE_OFFSETS[rng.choose_weighted(&NOISE_WEIGHTS)];
    }
}

/// The task string `"^" + " ".join(numbers) + "$"`.
pub fn format_sequence(numbers: &[i64]) -> String {
    let mut s = String::with_capacity(numbers.len() * 6 + 2);
    s.push('^');
    for (j, x) in numbers.iter().enumerate() {
        if j > 0 {
            s.push(' ');
        }
        s.push_str(&x.to_string());
    }
    s.push('$');
    s
}

/// Tokens of `format_sequence(numbers)` written directly (no string), with the same rules:
/// a negative number loses its sign. Errors when longer than `max_ctx`; pads otherwise.
pub fn encode_numbers(numbers: &[i64], max_ctx: usize, out: &mut Vec<u32>) -> Result<()> {
    let start = out.len();
    out.push(tokenizer::BOS);
    let mut digits = [0u32; 20];
    for (j, x) in numbers.iter().enumerate() {
        if j > 0 {
            out.push(tokenizer::SPACE);
        }
        let (mut v, mut n) = (x.unsigned_abs(), 0);
        loop {
            digits[n] = (v % 10) as u32;
            n += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        out.extend(digits[..n].iter().rev());
    }
    out.push(tokenizer::EOS);
    let len = out.len() - start;
    if len > max_ctx {
        out.truncate(start);
        return Err(crate::Error::Data(format!(
            "sequence of {len} tokens does not fit the context of {max_ctx} tokens: {:?}…",
            format_sequence(&numbers[..numbers.len().min(8)])
        )));
    }
    out.resize(start + max_ctx, tokenizer::PAD);
    Ok(())
}

/// Tokenized, padded rows of examples `0..n` of one distribution. With `noise`, each example's
/// numbers are perturbed in example order from that stream.
pub fn generate_rows(
    task: MathTask,
    k: u64,
    n: usize,
    length: usize,
    max_ctx: usize,
    mut noise: Option<&mut Stream>,
) -> Result<TokenMatrix> {
    let mut out = TokenMatrix::with_capacity(max_ctx, n);
    for i in 0..n {
        let mut numbers = sequence_numbers(task, k, i as u64, length);
        if let Some(rng) = noise.as_deref_mut() {
            add_noise(&mut numbers, rng);
        }
        encode_numbers(&numbers, max_ctx, &mut out.data)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::purpose;

    #[test]
    fn first_number_is_f_of_start() {
        assert_eq!(sequence_numbers(MathTask::Increment, 7, 5, 3), vec![12, 19, 26]);
        assert_eq!(sequence_numbers(MathTask::Increment, 2, 0, 2), vec![2, 4]);
        assert_eq!(format_sequence(&[7, 14]), "^7 14$");
    }

    #[test]
    fn mult_is_modular() {
        // 7·3000 = 21000 ≡ 866; 7·866 = 6062.
        assert_eq!(sequence_numbers(MathTask::Mult, 7, 3000, 2), vec![866, 6062]);
        let xs = sequence_numbers(MathTask::Mult, 5, 19_999, 20);
        assert!(xs.iter().all(|&x| (0..MULT_MODULUS as i64).contains(&x)));
        assert_eq!(sequence_numbers(MathTask::Mult, 7, 0, 3), vec![0, 0, 0]);
    }

    #[test]
    fn noise_rates() {
        // 20000 × 20 numbers: each offset −1 and +1 should hit ≈ 5% (σ ≈ 138 draws).
        let mut rng = Stream::new(0, purpose::DATA, 99);
        let (mut minus, mut plus, mut total) = (0i64, 0i64, 0i64);
        for i in 0..20_000u64 {
            let clean = sequence_numbers(MathTask::Increment, 7, i, 20);
            let mut noisy = clean.clone();
            add_noise(&mut noisy, &mut rng);
            for (c, n) in clean.iter().zip(&noisy) {
                match n - c {
                    -1 => minus += 1,
                    1 => plus += 1,
                    0 => {}
                    d => panic!("offset {d}"),
                }
                total += 1;
            }
        }
        let expect = total as f64 * 0.05;
        let sigma = (total as f64 * 0.05 * 0.95).sqrt();
        for (name, count) in [("-1", minus), ("+1", plus)] {
            assert!((count as f64 - expect).abs() < 5.0 * sigma, "{name}: {count} of {total}, expected ≈ {expect}");
        }
    }

    #[test]
    fn negative_numbers_lose_their_sign() {
        let row = tokenizer::encode(&format_sequence(&[-1, 7]));
        assert_eq!(row, vec![tokenizer::BOS, 1, tokenizer::SPACE, 7, tokenizer::EOS]);
    }

    #[test]
    fn direct_encoding_matches_the_string_path() {
        let mut rng = Stream::new(5, purpose::DATA, 0);
        for i in [0u64, 1, 9, 10, 99, 1234, 19_999] {
            for task in [MathTask::Increment, MathTask::Mult] {
                let mut numbers = sequence_numbers(task, 7, i, 20);
                add_noise(&mut numbers, &mut rng);
                numbers[0] = -(numbers[0] % 3); // exercise the sign and 0
                let mut direct = Vec::new();
                encode_numbers(&numbers, 150, &mut direct).unwrap();
                assert_eq!(direct, tokenizer::encode_padded(&format_sequence(&numbers), 150).unwrap());
            }
        }
        let mut out = vec![1];
        assert!(encode_numbers(&[12345, 6789], 10, &mut out).is_err());
        assert_eq!(out, [1], "a failed row leaves the buffer untouched");
    }

    #[test]
    fn rows_are_padded() {
        let m = generate_rows(MathTask::Increment, 7, 3, 2, 12, None).unwrap();
        assert_eq!(m.rows(), 3);
        assert_eq!(tokenizer::decode(m.row(2)), "^9 16$______");
        assert!(generate_rows(MathTask::Increment, 7, 3, 20, 50, None).is_err());
    }
}

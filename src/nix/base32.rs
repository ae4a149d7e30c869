//! nix32: Nix's base-32 encoding (docs/formats.md, "Hashes, nix32 and store paths").
//!
//! Alphabet `0123456789abcdfghijklmnpqrsvwxyz` (no `e o u t`), no padding.
//! `encoded_len(n) = (8n − 1) / 5 + 1`: 20 bytes → 32 chars, 32 bytes → 52.
//!
//! Bit order: the byte string is read as a little-endian big number and
//! written most-significant 5-bit group first. The character at position
//! `len − 1 − k` carries bits `5k … 5k+4`, so the *first* character depends on
//! the *last* bytes. Not RFC 4648 base32, which is why no crate does it.
//!
//! Decoding is strict: the length must be exactly `encoded_len(out_len)`,
//! every character must be in the alphabet, and the bits of the first
//! character that lie beyond the last byte must be zero (Nix rejects those
//! strings too).

use std::fmt;

const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A character outside `0123456789abcdfghijklmnpqrsvwxyz`, with its index.
    InvalidChar { index: usize, ch: char },
    /// The string's length is not `encoded_len` of the wanted byte count.
    InvalidLength(usize),
    /// The first character sets bits beyond the last byte.
    Overflow,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::InvalidChar { index, ch } => {
                write!(f, "nix32: invalid character {ch:?} at index {index}")
            }
            DecodeError::InvalidLength(len) => {
                write!(f, "nix32: wrong length {len} for the expected digest size")
            }
            DecodeError::Overflow => {
                write!(f, "nix32: first character sets bits beyond the digest size")
            }
        }
    }
}

/// Length of the nix32 form of `n` bytes: 20 → 32, 32 → 52.
pub fn encoded_len(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (8 * n - 1) / 5 + 1
    }
}

pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for k in (0..len).rev() {
        let b = 5 * k;
        let (i, j) = (b / 8, b % 8);
        let low = u16::from(bytes[i]) >> j;
        let high = bytes.get(i + 1).map_or(0, |&n| u16::from(n) << (8 - j));
        out.push(char::from(ALPHABET[usize::from((low | high) & 31)]));
    }
    out
}

fn digit(c: u8) -> Option<u8> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u8)
}

/// Decode into exactly `out_len` bytes.
pub fn decode(s: &str, out_len: usize) -> Result<Vec<u8>, DecodeError> {
    let len = s.len();
    if len != encoded_len(out_len) {
        return Err(DecodeError::InvalidLength(len));
    }
    let mut out = vec![0u8; out_len];
    for (n, c) in s.bytes().enumerate() {
        let d = digit(c).ok_or_else(|| DecodeError::InvalidChar {
            index: n,
            // `s` is a str; report the whole (possibly multi-byte) char.
            ch: s[n..].chars().next().unwrap_or('\u{fffd}'),
        })?;
        let b = 5 * (len - 1 - n);
        let (i, j) = (b / 8, b % 8);
        let v = u16::from(d) << j;
        out[i] |= (v & 0xff) as u8;
        let carry = (v >> 8) as u8;
        match out.get_mut(i + 1) {
            Some(next) => *next |= carry,
            None if carry != 0 => return Err(DecodeError::Overflow),
            None => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "407bcd9b608b7a78f9885930c2ce1fcafae0977d31ccd43fc1e998cb475a9aac";
    const NIX32: &str = "1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn encoded_lengths() {
        for (n, want) in [(0, 0), (1, 2), (20, 32), (32, 52), (64, 103)] {
            assert_eq!(encoded_len(n), want, "n={n}");
        }
    }

    #[test]
    fn vectors_round_trip() {
        let cases: &[(&str, Vec<u8>, &str)] = &[
            ("empty", vec![], ""),
            ("one byte 0x1f", vec![0x1f], "0z"),
            ("one byte 0xff", vec![0xff], "7z"),
            ("sha256 of the formats.md example", unhex(HEX), NIX32),
            // The store path digest of builtins.toFile "foo" "bar" (formats.md "Hashes, nix32 and store paths").
            (
                "store path digest",
                decode("vxjiwkjkn7x4079qvh1jkl5pn05j2aw0", 20).unwrap(),
                "vxjiwkjkn7x4079qvh1jkl5pn05j2aw0",
            ),
        ];
        for (name, bytes, text) in cases {
            assert_eq!(encode(bytes), *text, "{name}: encode");
            assert_eq!(
                decode(text, bytes.len()).as_ref(),
                Ok(bytes),
                "{name}: decode"
            );
        }
    }

    #[test]
    fn first_char_depends_on_last_byte() {
        let mut b = [0u8; 20];
        b[19] = 0x80;
        let s = encode(&b);
        assert_eq!(&s[..1], "h", "{s}");
        assert!(s[1..].bytes().all(|c| c == b'0'), "{s}");
    }

    #[test]
    fn rejects() {
        let cases: &[(&str, &str, usize, DecodeError)] = &[
            ("too short", "1b4sb93", 32, DecodeError::InvalidLength(7)),
            (
                "too long",
                "01b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0",
                32,
                DecodeError::InvalidLength(53),
            ),
            (
                "letter e",
                "1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsyse",
                32,
                DecodeError::InvalidChar { index: 51, ch: 'e' },
            ),
            (
                "upper case",
                "1B4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0",
                32,
                DecodeError::InvalidChar { index: 1, ch: 'B' },
            ),
            (
                "non-ascii",
                "1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsyé",
                32,
                DecodeError::InvalidChar {
                    index: 50, ch: 'é'
                },
            ),
            // 52 chars hold 260 bits; the top 4 must be zero: '1' is ok, '2' is not.
            (
                "overflow bits",
                "2b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0",
                32,
                DecodeError::Overflow,
            ),
            ("overflow one byte", "8z", 1, DecodeError::Overflow),
        ];
        for (name, s, n, want) in cases {
            assert_eq!(decode(s, *n).as_ref(), Err(want), "{name}");
        }
    }

    #[test]
    fn messages() {
        assert_eq!(
            DecodeError::InvalidChar { index: 3, ch: 'e' }.to_string(),
            "nix32: invalid character 'e' at index 3"
        );
        let e: crate::error::Error = DecodeError::Overflow.into();
        assert_eq!(e.exit, crate::error::Exit::Verification);
    }
}

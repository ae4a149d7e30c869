//! nix32: Nix's base-32 encoding (§3). INTERFACE STUB — to be implemented.

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A character outside `0123456789abcdfghijklmnpqrsvwxyz`, with its index.
    InvalidChar { index: usize, ch: char },
    /// Length does not decode to a whole number of bytes / bits overflow.
    InvalidLength(usize),
}

/// Length of the nix32 form of `n` bytes: 20 → 32, 32 → 52.
pub fn encoded_len(n: usize) -> usize {
    todo!("{n}")
}

pub fn encode(bytes: &[u8]) -> String {
    todo!("{bytes:?}")
}

/// Decode into exactly `out_len` bytes.
pub fn decode(s: &str, out_len: usize) -> Result<Vec<u8>, DecodeError> {
    todo!("{s}{out_len}")
}

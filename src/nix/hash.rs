//! sha256 digests in the forms narinfo uses (docs/formats.md, "Hashes, nix32 and store paths").
//!
//! Accepted textual forms (Nix `Hash::parseAnyPrefixed`, sha256 only):
//!
//! ```text
//! sha256:<52 nix32>   what Nix writes in narinfo and fingerprints
//! sha256:<64 hex>     lower-case base16 (upper case accepted, as Nix does)
//! sha256:<44 base64>  standard alphabet, with padding
//! sha256-<44 base64>  SRI
//! ```
//!
//! The form after `sha256:` is chosen by its length. Any other algorithm
//! (`md5`, `sha1`, `sha512`, `blake3`) is `UnsupportedAlgo`: narinfo NarHash
//! is always sha256.
//!
//! [`HashingReader`] hashes and counts a stream and stops it at a byte
//! limit: this is what cuts off a NAR that is longer than its NarSize (for
//! instance a decompression bomb) before it fills the disk.

use std::fmt;
use std::io;

use base64::Engine as _;

use super::base32;

/// A sha256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256(pub [u8; 32]);

#[derive(Debug, PartialEq, Eq)]
pub enum HashError {
    /// Not `sha256:` + nix32/hex/base64, nor SRI `sha256-<base64>`.
    Malformed(String),
    /// Another algorithm (`sha1:`, `md5:`, …).
    UnsupportedAlgo(String),
}

impl fmt::Display for HashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashError::Malformed(s) => write!(
                f,
                "hash: malformed sha256 hash {s:?} (expected sha256:<nix32, hex or base64> or sha256-<base64>)"
            ),
            HashError::UnsupportedAlgo(s) => {
                write!(f, "hash: unsupported algorithm in {s:?} (only sha256 is supported)")
            }
        }
    }
}

/// Algorithms Nix knows that are not sha256.
const OTHER_ALGOS: [&str; 4] = ["md5", "sha1", "sha512", "blake3"];

fn from_hex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let hi = char::from(b[2 * i]).to_digit(16)?;
        let lo = char::from(b[2 * i + 1]).to_digit(16)?;
        *o = (hi * 16 + lo) as u8;
    }
    Some(out)
}

fn from_base64(s: &str) -> Option<[u8; 32]> {
    // Bounded before decoding: 32 bytes are exactly 44 characters.
    if s.len() != 44 {
        return None;
    }
    let v = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    v.try_into().ok()
}

// The `to_*(&self)` signatures are the shared interface others code against.
#[allow(clippy::wrong_self_convention)]
impl Sha256 {
    /// `sha256:<52 nix32>` | `sha256:<64 hex>` | `sha256:<44 base64>` | `sha256-<base64>`.
    pub fn parse(s: &str) -> Result<Sha256, HashError> {
        let malformed = || HashError::Malformed(s.to_string());
        if let Some(rest) = s.strip_prefix("sha256:") {
            let bytes = match rest.len() {
                52 => base32::decode(rest, 32)
                    .ok()
                    .and_then(|v| v.try_into().ok()),
                64 => from_hex(rest),
                44 => from_base64(rest),
                _ => None,
            };
            return bytes.map(Sha256).ok_or_else(malformed);
        }
        if let Some(rest) = s.strip_prefix("sha256-") {
            return from_base64(rest).map(Sha256).ok_or_else(malformed);
        }
        let algo = s.split([':', '-']).next().unwrap_or("");
        if s.len() > algo.len() && OTHER_ALGOS.contains(&algo) {
            return Err(HashError::UnsupportedAlgo(s.to_string()));
        }
        Err(malformed())
    }
    /// `sha256:<nix32>` — how narinfo and fingerprints spell it.
    pub fn to_nix32_prefixed(&self) -> String {
        format!("sha256:{}", base32::encode(&self.0))
    }
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
    #[cfg(test)]
    pub fn to_sri(&self) -> String {
        format!(
            "sha256-{}",
            base64::engine::general_purpose::STANDARD.encode(self.0)
        )
    }
    #[cfg(test)]
    pub fn digest(data: &[u8]) -> Sha256 {
        let d = ring::digest::digest(&ring::digest::SHA256, data);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Sha256(out)
    }
}

impl std::fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_nix32_prefixed())
    }
}

/// `sha256:<nix32>`, as in narinfo.
impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_nix32_prefixed())
    }
}

/// An `io::Read` adapter that hashes and counts what passes through and
/// fails with `InvalidData` once more than `limit` bytes are read.
///
/// It never asks the inner reader for bytes beyond the limit, except one
/// probe byte once the limit is reached, so everything up to the limit is
/// delivered and at most one byte beyond it is consumed before the error.
pub struct HashingReader<R> {
    pub inner: R,
    pub limit: u64,
    pub count: u64,
    ctx: ring::digest::Context,
}

impl<R: io::Read> HashingReader<R> {
    pub fn new(inner: R, limit: u64) -> Self {
        HashingReader {
            inner,
            limit,
            count: 0,
            ctx: ring::digest::Context::new(&ring::digest::SHA256),
        }
    }
    /// Digest and byte count of everything read so far.
    pub fn finish(self) -> (Sha256, u64) {
        let d = self.ctx.finish();
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        (Sha256(out), self.count)
    }
}

impl<R: io::Read> io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Up to the limit, ask for no more than is allowed; at the limit, a
        // one-byte probe tells a proper end (0) from an overlong stream.
        let allowed = match self.limit.saturating_sub(self.count) {
            0 => 1,
            left => left,
        };
        let want = usize::try_from(allowed).map_or(buf.len(), |a| a.min(buf.len()));
        let n = self.inner.read(&mut buf[..want])?;
        if self.count + n as u64 > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "stream is longer than the expected {} bytes (NarSize)",
                    self.limit
                ),
            ));
        }
        self.count += n as u64;
        self.ctx.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    const NIX32: &str = "sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0";
    const HEX: &str = "407bcd9b608b7a78f9885930c2ce1fcafae0977d31ccd43fc1e998cb475a9aac";
    const SRI: &str = "sha256-QHvNm2CLenj5iFkwws4fyvrgl30xzNQ/wemYy0damqw=";

    #[test]
    fn parses_every_form_to_the_same_digest() {
        let cases = [
            ("nix32", NIX32.to_string()),
            ("hex", format!("sha256:{HEX}")),
            ("hex upper", format!("sha256:{}", HEX.to_uppercase())),
            ("base64", format!("sha256:{}", &SRI[7..])),
            ("sri", SRI.to_string()),
        ];
        for (name, s) in cases {
            let h = Sha256::parse(&s).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(h.to_hex(), HEX, "{name}");
            assert_eq!(h.to_nix32_prefixed(), NIX32, "{name}");
            assert_eq!(h.to_sri(), SRI, "{name}");
            assert_eq!(h.to_string(), NIX32, "{name}");
        }
    }

    #[test]
    fn rejects() {
        let cases: &[(&str, &str, bool)] = &[
            // (name, input, unsupported algo?)
            ("no prefix", &NIX32[7..], false),
            ("empty", "", false),
            ("sha256 only", "sha256:", false),
            (
                "wrong length",
                "sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys",
                false,
            ),
            (
                "bad nix32 char",
                "sha256:eb4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0",
                false,
            ),
            (
                "nix32 overflow",
                "sha256:zb4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0",
                false,
            ),
            (
                "bad hex",
                "sha256:g07bcd9b608b7a78f9885930c2ce1fcafae0977d31ccd43fc1e998cb475a9aac",
                false,
            ),
            (
                "bad base64",
                "sha256-QHvNm2CLenj5iFkwws4fyvrgl30xzNQ/wemYy0damq!=",
                false,
            ),
            (
                "sri too short",
                "sha256-QHvNm2CLenj5iFkwws4fyvrgl30xzNQ/wemYy0damqw",
                false,
            ),
            ("unknown algo", "sha3:abc", false),
            ("md5", "md5:0123456789abcdef", true),
            (
                "sha1",
                "sha1:0123456789abcdef0123456789abcdef01234567",
                true,
            ),
            ("sha512 sri", "sha512-AAAA", true),
        ];
        for (name, s, unsupported) in cases {
            let want = if *unsupported {
                HashError::UnsupportedAlgo(s.to_string())
            } else {
                HashError::Malformed(s.to_string())
            };
            assert_eq!(Sha256::parse(s), Err(want), "{name}");
        }
    }

    #[test]
    fn messages() {
        assert_eq!(
            HashError::UnsupportedAlgo("sha1:abc".into()).to_string(),
            "hash: unsupported algorithm in \"sha1:abc\" (only sha256 is supported)"
        );
        let e: crate::error::Error = HashError::Malformed("x".into()).into();
        assert_eq!(e.exit, crate::error::Exit::Verification);
        assert!(
            e.message.starts_with("hash: malformed sha256 hash \"x\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn digest_of_empty_input() {
        // sha256 of the empty string, hex.
        assert_eq!(
            Sha256::digest(b"").to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    /// A reader that hands out at most 3 bytes per call, to exercise short reads.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(3).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn hashing_reader_counts_and_hashes() {
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        for (name, limit) in [
            ("exact limit", 1000),
            ("above limit", 5000),
            ("max", u64::MAX),
        ] {
            let mut r = HashingReader::new(Trickle(&data), limit);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "{name}");
            let (h, n) = r.finish();
            assert_eq!(n, 1000, "{name}");
            assert_eq!(h, Sha256::digest(&data), "{name}");
        }
    }

    #[test]
    fn hashing_reader_stops_at_limit() {
        let data = vec![7u8; 1000];
        for (name, limit) in [("one short", 999), ("zero", 0), ("half", 500)] {
            let mut r = HashingReader::new(&data[..], limit);
            let mut out = Vec::new();
            let err = r.read_to_end(&mut out).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{name}");
            assert_eq!(
                err.to_string(),
                format!("stream is longer than the expected {limit} bytes (NarSize)"),
                "{name}"
            );
            assert_eq!(out.len() as u64, limit, "{name}");
            assert_eq!(r.count, limit, "{name}");
        }
    }
}

//! `.narinfo` files (§1.3). INTERFACE STUB.

use super::hash::Sha256;
use super::signature::Signature;
use super::store_path::StorePath;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Xz,
    Zstd,
    Bzip2,
    /// A value Nix knows (br, gzip, lz4, lzip, …) that fh-lite cannot decode.
    Unsupported(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarInfo {
    pub store_path: StorePath,
    pub url: String,
    pub compression: Compression,
    pub file_hash: Option<Sha256>,
    pub file_size: Option<u64>,
    pub nar_hash: Sha256,
    pub nar_size: u64,
    /// Full store paths, in file order (sort for the fingerprint).
    pub references: Vec<StorePath>,
    pub deriver: Option<StorePath>,
    pub sigs: Vec<Signature>,
    pub ca: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum NarInfoError {
    // One variant per rule; see the implementation.
    Todo,
}

impl NarInfo {
    /// Strict parse. `expected_hash_part`: the StorePath must carry it.
    pub fn parse(text: &str, expected_hash_part: &str) -> Result<NarInfo, NarInfoError> {
        todo!("{text}{expected_hash_part}")
    }
    /// `1;<path>;sha256:<nix32>;<size>;<sorted full refs, comma-joined>`
    pub fn fingerprint(&self) -> String {
        todo!()
    }
}

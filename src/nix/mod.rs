//! Nix formats, pure: no network, no filesystem.
//!
//! One module per format, each opening with the grammar it follows
//! (reference/nix-protocols.md section in brackets):
//! `base32` (nix32, §3), `hash` (sha256 forms, §3), `store_path` (§3),
//! `narinfo` (§1.3), `signature` (§2), `nar` (streaming reader, §4).

pub mod base32;
pub mod hash;
pub mod nar;
pub mod narinfo;
pub mod signature;
pub mod store_path;

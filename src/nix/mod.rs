//! Nix formats, pure: no network, no filesystem.
//!
//! One module per format, each opening with the grammar it follows (the
//! section of docs/formats.md in brackets): `base32` (nix32), `hash`
//! (sha256 forms) and `store_path` ("Hashes, nix32 and store paths"),
//! `narinfo` ("Narinfo"), `signature` ("Signatures"), `nar` (streaming
//! reader, "NAR").

pub mod base32;
pub mod hash;
pub mod nar;
pub mod narinfo;
pub mod store_path;

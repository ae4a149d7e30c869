//! Where substituted paths land: one trait, one file per backend.
//!
//! Backends: `image` (an image root: DIR/nix/store + DIR/nix-path-registration),
//! `daemon` (the nix-daemon socket), `local` (root, no daemon: unpack +
//! `nix-store --load-db`), `nix_copy` (fallback through `nix copy`).
//!
//! The fetch step calls `add_path` from several threads at once, but only
//! for a path whose references (other than itself) were already added or
//! were valid before: backends may rely on that order.

use std::collections::BTreeSet;
use std::io::Read;

use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StorePath;

#[derive(Debug)]
pub enum StoreError {
    /// INTERFACE STUB: variants are the backends' to add; every one names
    /// the store path and/or file involved.
    Todo(String),
}

pub trait Store: Send + Sync {
    /// A short name for messages: "image root /mnt", "nix-daemon at …".
    fn describe(&self) -> String;
    /// Which of `paths` are already valid in this store.
    fn query_valid(&self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>, StoreError>;
    /// Protect `paths` from garbage collection until this process ends.
    fn add_temp_roots(&self, paths: &[StorePath]) -> Result<(), StoreError>;
    /// Add one path from its verified narinfo and its *uncompressed* NAR
    /// stream. The backend parses the NAR strictly, checks NarHash and
    /// NarSize while consuming it, and leaves nothing half-written or
    /// registered when anything fails.
    fn add_path(&self, info: &NarInfo, nar: &mut dyn Read) -> Result<(), StoreError>;
    /// After the last `add_path`: make everything durable/visible.
    fn finish(&self) -> Result<(), StoreError>;
}

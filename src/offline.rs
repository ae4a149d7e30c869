//! Where a closure comes from, when it is not FlakeHub.
//!
//! `apply` runs the same plan → fetch → register → activate for every
//! [`Source`]: FlakeHub with its closure token (apply.rs), a bundle
//! (`--from FILE|DIR|-`, bundle/), or a store path from any signed binary
//! cache (`--cache URL`, direct.rs). Before resolve, apply makes one call
//! (`apply::open_offline`): it opens the bundle (`bundle::source::open`,
//! which verifies the manifest and takes the reference from it) or the
//! cache (`direct::open`), and applies the anti-downgrade memory
//! (versions.rs) to every exact version, from a reference or a manifest.

use std::collections::BTreeSet;
use std::io::Read;

use crate::cache::CacheClient;
use crate::cli::ApplyOpts;
use crate::error::Error;
use crate::fetch::FetchOptions;
use crate::http::Secret;
use crate::nix::narinfo::NarInfo;
use crate::nix::signature::TrustedKeys;
use crate::nix::store_path::StorePath;
use crate::plan::Plan;
use crate::store::{Store, StoreError};

/// What apply needs from where the closure comes from.
pub trait Source {
    /// The store path to deploy.
    fn store_path(&self) -> &StorePath;
    /// The cache credential (for the `nix copy` backend); empty offline.
    fn token(&self) -> &Secret;
    /// The binary cache the narinfos and NARs come from.
    fn cache(&self) -> Box<dyn CacheClient + '_>;
    /// Walk the closure: what the store lacks, verified.
    fn plan(&mut self, store: &dyn Store, keys: &TrustedKeys, jobs: usize) -> Result<Plan, Error>;
    /// Fetch the plan's paths into the store.
    fn fetch(
        &mut self,
        store: &dyn Store,
        keys: &TrustedKeys,
        how: &FetchOptions,
        plan: Plan,
    ) -> Result<(), Error>;
}

/// A bundle opened by `apply::open_offline`: the apply options with the manifest's
/// reference, and the bundle as the source.
pub struct Opened {
    pub opts: ApplyOpts,
    pub source: Box<dyn Source>,
    /// Some(what) for a bundle whose manifest no trusted key signed
    /// (`--allow-unsigned-bundle`): its reference and version are
    /// unproven, so the anti-downgrade memory neither trusts nor learns
    /// them (versions.rs, [`crate::versions::check_unproven`]).
    pub unproven: Option<String>,
}

/// A store that has nothing: `bundle create` plans the whole closure.
pub struct EmptyStore;

impl Store for EmptyStore {
    fn describe(&self) -> String {
        "the bundle".to_string()
    }
    fn query_valid(&self, _: &[StorePath]) -> Result<BTreeSet<StorePath>, StoreError> {
        Ok(BTreeSet::new())
    }
    fn add_temp_roots(&self, _: &[StorePath]) -> Result<(), StoreError> {
        Ok(())
    }
    fn add_path(&self, _: &NarInfo, _: &mut dyn Read) -> Result<(), StoreError> {
        Ok(())
    }
    fn finish(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

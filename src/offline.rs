//! Where a closure comes from, when it is not FlakeHub (issue 12).
//!
//! `apply` runs the same plan → fetch → register → activate for every
//! [`Source`]: FlakeHub with its closure token (apply.rs), or a bundle
//! (`--from FILE|DIR|-`, bundle/). [`open`] is the one call apply makes
//! before resolve: it opens the bundle, verifies its manifest, and takes
//! the reference from it. It also applies the anti-downgrade memory
//! (versions.rs) to every exact version, from a reference or a manifest.

use std::collections::BTreeSet;
use std::io::Read;

use crate::cache::CacheClient;
use crate::cli::{ApplyOpts, Common, OfflineOpts};
use crate::error::Error;
use crate::http::Secret;
use crate::nix::narinfo::NarInfo;
use crate::nix::signature::TrustedKeys;
use crate::nix::store_path::StorePath;
use crate::plan::Plan;
use crate::store::{Store, StoreError};

/// The reference cli.rs puts in `ApplyOpts` with `--from` until [`open`]
/// replaces it with the manifest's.
pub const PLACEHOLDER_REF: &str = "fh-lite/from-bundle/*";

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
        jobs: usize,
        plan: Plan,
    ) -> Result<(), Error>;
}

/// A bundle opened by [`open`]: the apply options with the manifest's
/// reference, and the bundle as the source.
pub struct Opened {
    pub opts: ApplyOpts,
    pub source: Box<dyn Source>,
}

/// Before resolve: with `--from`, open and verify the bundle; for an exact
/// version (from REF or the manifest), refuse a downgrade.
pub fn open(
    common: &Common,
    opts: &ApplyOpts,
    offline: &OfflineOpts,
) -> Result<Option<Opened>, Error> {
    let opened = match &offline.from {
        None => None,
        Some(from) => Some(crate::bundle::source::open(common, opts, offline, from)?),
    };
    let reference = opened
        .as_ref()
        .map_or(&opts.reference, |o| &o.opts.reference);
    if !offline.allow_downgrade {
        crate::versions::check(&common.state_dir, reference)?;
    }
    Ok(opened)
}

/// After a successful apply: remember its exact version (if any).
pub fn remember(common: &Common, opts: &ApplyOpts) -> Result<(), Error> {
    crate::versions::remember(&common.state_dir, &opts.reference)
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

//! Where a closure comes from: a [`Target`] on the command line (cli.rs),
//! opened as a [`Source`].
//!
//! FlakeHub with its closure token (flakehub/), a bundle (`--from
//! FILE|DIR|-`, bundle.rs), or a store path from any signed binary cache
//! (`--cache URL`, cache.rs). Every command runs the same select store →
//! plan → room → fetch on a source (pipeline.rs); a source only says where
//! the narinfos and NARs come from, and what to do when the cache refuses
//! its credential.

pub mod bundle;
pub mod cache;
pub mod flakehub;

use flakehub::FlakeHub;

use crate::cache::{CacheClient, FetchError};
use crate::error::Error;
use crate::fetch::FetchOptions;
use crate::http::{Secret, Settings};
use crate::nix::store_path::StorePath;
use crate::options::{ApplyOpts, OfflineOpts, Target};
use crate::outref::OutputRef;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::store::Store;

/// A closure's source, opened: the store path, and the cache its narinfos
/// and NARs come from.
pub trait Source {
    /// The store path to deploy.
    fn store_path(&self) -> &StorePath;
    /// The FlakeHub reference the store path is the output of (a bundle's
    /// from its manifest); None for a store path given directly.
    fn reference(&self) -> Option<&OutputRef>;
    /// Some(name) for a bundle whose manifest no trusted key signed
    /// (`--allow-unsigned-bundle`): its reference, and so its version, is
    /// unproven, and the anti-downgrade memory neither trusts nor learns
    /// it ([`crate::versions::check_unproven`]).
    fn unproven(&self) -> Option<&str> {
        None
    }
    /// The cache credential (for the `nix copy` backend); empty offline.
    fn token(&self) -> &Secret;
    /// The binary cache the narinfos and NARs come from.
    fn cache(&self) -> Box<dyn CacheClient + '_>;
    /// Refuse a store backend this source cannot feed.
    fn check_store(&self, _store: &dyn Store) -> Result<(), Error> {
        Ok(())
    }
    /// Fetch the plan's paths itself, for a source that is not a cache to
    /// download from at will (a bundle read once, in order). None: the
    /// pipeline downloads them from [`Source::cache`].
    fn fetch_itself(
        &mut self,
        _store: &dyn Store,
        _plan: &Plan,
        _how: &FetchOptions,
        _progress: &Progress,
    ) -> Option<Result<(), Error>> {
        None
    }
    /// After `e`: Ok(true) when the cache refused the credential and a
    /// fresh one was obtained, so the step is worth running again.
    fn renew(&mut self, _e: &FetchError, _store: &dyn Store) -> Result<bool, Error> {
        Ok(false)
    }
    /// A cache error as the user is told it.
    fn explain(&self, e: FetchError) -> Error {
        e.into()
    }
}

/// Open the source of `opts.target`: the bundle (verified, its reference
/// from the manifest), the cache `--cache` names, or FlakeHub (resolve:
/// the store path and a closure token). Every HTTP client is made with
/// `http`.
pub fn open<'a>(
    flakehub: &FlakeHub,
    http: &Settings,
    opts: &'a ApplyOpts,
    offline: &OfflineOpts,
) -> Result<Box<dyn Source + 'a>, Error> {
    match &opts.target {
        Target::FlakeHub(reference) => Ok(Box::new(flakehub::ClosureToken::resolve(
            crate::http::Client::new(http)?,
            flakehub.clone(),
            reference,
        )?)),
        Target::Bundle(from) => Ok(Box::new(bundle::open(
            &flakehub.frontend_addr,
            opts,
            offline,
            from,
        )?)),
        Target::StorePath { path, cache } => Ok(Box::new(cache::open(http, offline, path, cache)?)),
    }
}

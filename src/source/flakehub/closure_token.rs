//! FlakeHub as the source of a closure: the store path a reference
//! resolves to, and the closure token that reads it from the FlakeHub
//! cache, renewed when it expires.

use super::FlakeHub;
use crate::cache::{CacheClient, FetchError, HttpCache};
use crate::error::{Error, Exit};
use crate::http::{Client, Secret};
use crate::nix::store_path::StorePath;
use crate::outref::OutputRef;
use crate::source::Source;
use crate::store::Store;
use crate::ui::say;

/// How often one run may ask FlakeHub for a fresh closure token.
const MAX_TOKEN_REFRESHES: u32 = 8;

/// The closure token and its renewal. It lasts about an hour; a long
/// transfer on a slow link can outlive it. Then FlakeHub is asked for a
/// fresh one (for the same store path), and the work goes on.
pub struct ClosureToken<'a> {
    client: Client,
    flakehub: FlakeHub,
    reference: &'a OutputRef,
    store_path: StorePath,
    token: Secret,
    refreshes: u32,
}

impl<'a> ClosureToken<'a> {
    /// Resolve `reference`: its store path and a closure token.
    pub fn resolve(
        client: Client,
        flakehub: FlakeHub,
        reference: &'a OutputRef,
    ) -> Result<ClosureToken<'a>, Error> {
        let r = super::resolve_with_token(&client, &flakehub, reference)?;
        Ok(ClosureToken {
            client,
            flakehub,
            reference,
            store_path: r.store_path,
            token: r.token,
            refreshes: 0,
        })
    }
}

impl Source for ClosureToken<'_> {
    fn store_path(&self) -> &StorePath {
        &self.store_path
    }
    fn reference(&self) -> Option<&OutputRef> {
        Some(self.reference)
    }
    fn token(&self) -> &Secret {
        &self.token
    }
    /// The binary cache, with the closure token as its credential.
    fn cache(&self) -> Box<dyn CacheClient + '_> {
        Box::new(HttpCache {
            client: &self.client,
            base: self.flakehub.cache_addr.clone(),
            token: &self.token,
        })
    }
    fn renew(&mut self, e: &FetchError, store: &dyn Store) -> Result<bool, Error> {
        if !e.is_token_refused() || !store.reads_nar() || self.refreshes >= MAX_TOKEN_REFRESHES {
            return Ok(false);
        }
        self.refreshes += 1;
        say("the cache refused the closure token (expired?); asking FlakeHub for a fresh one");
        // The reference must still resolve to the same path (a loose
        // requirement may have moved on).
        let reference = self.reference;
        let again = super::resolve_with_token(&self.client, &self.flakehub, reference)?;
        if again.store_path != self.store_path {
            return Err(Error::new(
                Exit::Cache,
                format!(
                    "{reference} now resolves to {} (a new release?), not {}; run the apply again",
                    again.store_path, self.store_path
                ),
            ));
        }
        self.token = again.token;
        Ok(true)
    }
}

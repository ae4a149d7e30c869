//! The one sequence every command runs on a [`Source`]: select the store →
//! plan → room and temp roots → fetch.
//!
//! ```text
//! Pipeline::new        the store backend (--store), checked against the source
//! Pipeline::plan       walk the closure: what the store lacks, verified
//! Pipeline::make_room  disk space for the unpacked paths; temp roots for the closure
//! Pipeline::fetch      download → verify → store, renewing a refused credential
//! ```
//!
//! `apply` runs all four with steps of its own in between (the dry-run
//! verdict, the journal), `fetch` runs them in a row and pins the result,
//! `bundle create` plans against an empty store ([`Pipeline::whole_closure`])
//! and copies the NARs from [`Source::cache`] into the bundle.

use std::path::Path;

use crate::cache::mirror;
use crate::error::Error;
use crate::fetch::FetchOptions;
use crate::nix::narinfo::signature::TrustedKeys;
use crate::options::ApplyOpts;
use crate::plan::{self, Plan};
use crate::progress::{Mode, Progress};
use crate::source::Source;
use crate::store::select::StoreChoice;
use crate::store::EmptyStore;
use crate::store::{select, Store};

pub struct Pipeline<'a> {
    source: Box<dyn Source + 'a>,
    store: Box<dyn Store>,
    keys: &'a TrustedKeys,
    jobs: usize,
    progress: Mode,
}

impl<'a> Pipeline<'a> {
    /// The store backend `store` names for `source` (refused when the
    /// source cannot feed it); progress shown as `progress` says.
    pub fn new(
        store: &StoreChoice,
        progress: Mode,
        opts: &'a ApplyOpts,
        source: Box<dyn Source + 'a>,
    ) -> Result<Pipeline<'a>, Error> {
        let store = select::select(store, &opts.trusted_keys, source.token())?;
        source.check_store(store.as_ref())?;
        Ok(Pipeline {
            source,
            store,
            keys: &opts.trusted_keys,
            jobs: opts.jobs,
            progress,
        })
    }

    /// A store that has nothing, so that the plan is the whole closure
    /// (`bundle create`).
    pub fn whole_closure(
        progress: Mode,
        opts: &'a ApplyOpts,
        source: Box<dyn Source + 'a>,
    ) -> Pipeline<'a> {
        Pipeline {
            source,
            store: Box::new(EmptyStore),
            keys: &opts.trusted_keys,
            jobs: opts.jobs,
            progress,
        }
    }

    pub fn source(&self) -> &dyn Source {
        self.source.as_ref()
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Walk the closure of the source's store path: what the store lacks,
    /// every narinfo verified.
    pub fn plan(&mut self) -> Result<Plan, Error> {
        let root = self.source.store_path().clone();
        loop {
            // The run's --mirrors in front of the source's cache.
            let cache = self.source.cache();
            let chain = mirror::wrap(cache.as_ref(), self.keys);
            let planned = plan::plan(&chain, self.store(), self.keys, &root, self.jobs);
            drop(cache);
            match planned {
                Ok(p) => return Ok(p),
                Err(e) if self.source.renew(&e, self.store.as_ref())? => continue,
                Err(e) => return Err(self.source.explain(e)),
            }
        }
    }

    /// Check the store's filesystem (under `root`) has room for the
    /// unpacked paths, and keep the closure from a concurrent garbage
    /// collection until this process ends (a root's closure is kept with
    /// it).
    pub fn make_room(&self, root: Option<&Path>, plan: &Plan) -> Result<(), Error> {
        if self.store.reads_nar() {
            let root = root.unwrap_or(Path::new("/"));
            plan::check_disk_space(&root.join("nix/store"), plan.unpack_bytes)?;
        }
        Ok(self.store.add_temp_roots(&plan.closure())?)
    }

    /// Fetch the plan's paths into the store. When the cache refuses the
    /// credential midway and the source renews it, plan again and go on
    /// with what is still missing, while each credential gets something
    /// done.
    pub fn fetch(&mut self, how: &FetchOptions, mut plan: Plan) -> Result<(), Error> {
        let progress = Progress::new(self.progress);
        let store = self.store.as_ref();
        loop {
            progress.plan(&plan);
            if let Some(done) = self.source.fetch_itself(store, &plan, how, &progress) {
                return done;
            }
            let cache = self.source.cache();
            let chain = mirror::wrap(cache.as_ref(), self.keys);
            let fetched = crate::fetch::fetch_all(&chain, store, &plan, how, &progress);
            drop(cache);
            let Err(e) = fetched else {
                return Ok(());
            };
            if !self.source.renew(&e, store)? {
                return Err(self.source.explain(e));
            }
            let cache = self.source.cache();
            let chain = mirror::wrap(cache.as_ref(), self.keys);
            let rest = plan::plan(&chain, store, self.keys, &plan.root, self.jobs);
            drop(cache);
            let rest = rest.map_err(|e| self.source.explain(e))?;
            if rest.paths.len() >= plan.paths.len() {
                return Err(self.source.explain(e));
            }
            plan = rest;
        }
    }
}

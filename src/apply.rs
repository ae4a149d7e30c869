//! `fh-lite apply`: the pipeline, one call per step.
//!
//! outref (parsed by `cli`) → resolve (`flakehub`) → plan (`plan`) → fetch
//! (`fetch`, into a `store` backend) → activate (`activate`), with the
//! state file recording the attempt and its result, and the state lock
//! making sure only one apply runs at a time.

use std::time::Instant;

use crate::activate::{self, Report};
use crate::cli::{ApplyOpts, Common, StoreKind};
use crate::error::{Error, Exit};
use crate::fetch::{self, HttpCache};
use crate::flakehub;
use crate::http::Client;
use crate::nix::signature::{PublicKey, TrustedKeys};
use crate::nix::store_path::StorePath;
use crate::plan;
use crate::progress::{Mode, Progress};
use crate::state;
use crate::store::image::ImageStore;
use crate::store::Store;

pub fn run(common: &Common, opts: &ApplyOpts) -> Result<Exit, Error> {
    let started = Instant::now();
    if opts.reference.is_loose() && !common.quiet {
        eprintln!("fh-lite: {}", crate::outref::loose_warning(&opts.reference));
    }
    let keys = trusted_keys(opts)?;
    let say = |msg: &str| {
        if !common.quiet && !common.json {
            eprintln!("fh-lite: {msg}");
        }
    };

    // One apply at a time (a dry run changes nothing and takes no lock).
    let _lock = if opts.dry_run {
        None
    } else {
        Some(state::lock(common)?)
    };

    // resolve
    let client = Client::new(common)?;
    let resolved = flakehub::resolve_with(&client, common, &opts.reference, true)?;
    let store_path = resolved.store_path.clone();
    let root_path = StorePath::parse(&store_path).map_err(Error::from)?;
    let Some(token) = resolved.token.as_ref() else {
        // resolve_with(…, true) refuses an answer without a token.
        return Err(Error::new(
            Exit::BadResponse,
            "FlakeHub did not return a closure token",
        ));
    };
    say(&format!("{} resolves to {store_path}", opts.reference));

    if !opts.dry_run {
        state::check_not_failed(common, opts, &store_path)?;
        if !opts.force && activate::is_current(common, opts, &store_path) {
            say(&format!(
                "{store_path} is already the current system; nothing to do (--force re-runs activation)"
            ));
            return Ok(Exit::Success);
        }
    }

    // plan
    let store = open_store(common, opts)?;
    let cache = HttpCache {
        client: &client,
        base: common.cache_addr.clone(),
        token,
    };
    let plan = plan::plan(&cache, store.as_ref(), &keys, &root_path, opts.jobs)?;
    if opts.dry_run {
        crate::print_stdout(&if common.json {
            plan.render_json()
        } else {
            plan.render_human()
        });
        return Ok(Exit::Success);
    }
    if let Some(dir) = store_dir(common) {
        plan::check_disk_space(&dir, plan.unpack_bytes)?;
    }

    // fetch + register
    let mut attempt = state::Attempt::start(&opts.reference.to_string(), &store_path);
    state::record_attempt(common, &attempt)?;
    let progress = Progress::new(Mode::detect(common.quiet, common.json));
    progress.plan(&plan);
    let fetched = fetch::fetch_all(&cache, store.as_ref(), &plan, opts.jobs, &progress);
    attempt.bytes_downloaded = plan.download_bytes;
    if let Err(e) = fetched {
        let e = Error::from(e);
        state::record_result(common, &attempt, e.exit, &Report::default())?;
        return Err(e);
    }
    say(&format!(
        "{} in {} ({:.1}s)",
        crate::progress::plural(plan.paths.len() as u64, "path"),
        store.describe(),
        started.elapsed().as_secs_f64()
    ));

    // activate
    let mut report = Report::default();
    let result = activate::activate(common, opts, &store_path, &mut report);
    let exit = match &result {
        Ok(x) => *x,
        Err(e) => e.exit,
    };
    state::record_result(common, &attempt, exit, &report)?;
    result
}

/// The built-in cache.flakehub.com keys (unless `--no-default-keys`) and
/// every `--trusted-key`.
fn trusted_keys(opts: &ApplyOpts) -> Result<TrustedKeys, Error> {
    let mut keys = if opts.no_default_keys {
        TrustedKeys::default()
    } else {
        TrustedKeys::flakehub_defaults()
    };
    for k in &opts.trusted_keys {
        let key = PublicKey::parse(k)
            .map_err(|e| Error::usage(format!("option '--trusted-key': {e}")))?;
        keys.add(key);
    }
    if keys.keys.is_empty() {
        return Err(Error::usage(
            "--no-default-keys leaves no trusted key: add --trusted-key NAME:KEY",
        ));
    }
    Ok(keys)
}

/// Where the paths land.
fn open_store(common: &Common, opts: &ApplyOpts) -> Result<Box<dyn Store>, Error> {
    match (opts.store, &common.root) {
        (StoreKind::Image, Some(root)) => Ok(Box::new(ImageStore::open(root)?)),
        (StoreKind::Image, None) => Err(Error::usage(
            "--store image needs --root DIR (the image being built)",
        )),
        _ => Err(Error::new(
            Exit::NotImplemented,
            "the live-system store backends (daemon, local, nix) are not built yet in this version; use --root DIR for an image root",
        )),
    }
}

/// The store directory on this machine's filesystem, for the disk check.
fn store_dir(common: &Common) -> Option<std::path::PathBuf> {
    Some(match &common.root {
        Some(r) => r.join("nix/store"),
        None => std::path::PathBuf::from("/nix/store"),
    })
}

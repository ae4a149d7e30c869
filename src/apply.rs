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
use crate::http::Secret;
use crate::nix::signature::TrustedKeys;
use crate::nix::store_path::StorePath;
use crate::plan;
use crate::progress::{Mode, Progress};
use crate::state;
use crate::store::image::ImageStore;
use crate::store::select::{self, NixCopyCache};
use crate::store::Store;

/// How often one apply may ask FlakeHub for a fresh closure token.
const MAX_TOKEN_REFRESHES: u32 = 8;

pub fn run(common: &Common, opts: &ApplyOpts) -> Result<Exit, Error> {
    let started = Instant::now();
    if opts.reference.is_loose() && !common.quiet {
        eprintln!("fh-lite: {}", crate::outref::loose_warning(&opts.reference));
    }
    let keys = opts.trusted_keys.clone();
    activate::preflight(common, opts)?;
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
    let Some(token) = resolved.token else {
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
    let store = open_store(common, opts, &keys, &token)?;
    // The closure token lasts about an hour; a long transfer on a slow link
    // can outlive it. Then FlakeHub is asked for a fresh one (for the same
    // store path), and the work goes on with what is still missing.
    let mut token = token;
    let mut refreshes = 0;
    let mut renew = |e: &fetch::FetchError, token: &mut Secret| -> Result<bool, Error> {
        if !e.is_token_refused() || !store.reads_nar() || refreshes >= MAX_TOKEN_REFRESHES {
            return Ok(false);
        }
        refreshes += 1;
        say("the cache refused the closure token (expired?); asking FlakeHub for a fresh one");
        *token = fresh_token(&client, common, opts, &store_path)?;
        Ok(true)
    };
    let mut plan = loop {
        let cache = http_cache(&client, common, &token);
        match plan::plan(&cache, store.as_ref(), &keys, &root_path, opts.jobs) {
            Ok(p) => break p,
            Err(e) if renew(&e, &mut token)? => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if opts.dry_run {
        crate::print_stdout(&if common.json {
            plan.render_json()
        } else {
            plan.render_human()
        });
        return Ok(Exit::Success);
    }
    if store.reads_nar() {
        plan::check_disk_space(&store_dir(common), plan.unpack_bytes)?;
    }
    // Keep the closure from a concurrent garbage collection until this
    // process ends (a root's closure is kept with it).
    let mut pinned: Vec<StorePath> = plan.paths.iter().map(|i| i.store_path.clone()).collect();
    pinned.push(root_path.clone());
    store.add_temp_roots(&pinned)?;

    // fetch + register
    let mut attempt = state::Attempt::start(&opts.reference.to_string(), &store_path);
    state::record_attempt(common, &attempt)?;
    let progress = Progress::new(Mode::detect(common.quiet, common.json));
    let total_paths = plan.paths.len();
    attempt.bytes_downloaded = plan.download_bytes;
    loop {
        progress.plan(&plan);
        let cache = http_cache(&client, common, &token);
        let Err(e) = fetch::fetch_all(&cache, store.as_ref(), &plan, opts.jobs, &progress) else {
            break;
        };
        let renewed = renew(&e, &mut token).and_then(|renewed| {
            if !renewed {
                return Ok(None);
            }
            let cache = http_cache(&client, common, &token);
            let rest = plan::plan(&cache, store.as_ref(), &keys, &root_path, opts.jobs)?;
            // Only go on while each token gets something done.
            Ok((rest.paths.len() < plan.paths.len()).then_some(rest))
        });
        let e = match renewed {
            Ok(Some(rest)) => {
                plan = rest;
                continue;
            }
            Ok(None) => Error::from(e),
            Err(e) => e,
        };
        state::record_result(common, &attempt, e.exit, &Report::default())?;
        return Err(e);
    }
    say(&format!(
        "{} in {} ({:.1}s)",
        crate::progress::plural(total_paths as u64, "path"),
        store.describe(),
        started.elapsed().as_secs_f64()
    ));

    // activate
    let mut report = Report::default();
    let result = activate::activate(common, opts, &store_path, &mut report);
    // The generation (if the action made one) is a permanent root now, but
    // a garbage collection that started before it existed may read this
    // process's temp roots only after it has exited. Announcing the root
    // again closes that window: while a collection runs, Nix passes a new
    // temp root straight to the collector, which keeps it for the rest of
    // its run; any later collection sees the generation.
    if let Err(e) = store.add_temp_roots(std::slice::from_ref(&root_path)) {
        eprintln!("fh-lite: warning: {e}");
    }
    let exit = match &result {
        Ok(x) => *x,
        Err(e) => e.exit,
    };
    state::record_result(common, &attempt, exit, &report)?;
    result
}

/// Resolve again for a fresh closure token; the reference must still
/// resolve to `store_path` (a loose requirement may have moved on).
fn fresh_token(
    client: &Client,
    common: &Common,
    opts: &ApplyOpts,
    store_path: &str,
) -> Result<Secret, Error> {
    let again = flakehub::resolve_with(client, common, &opts.reference, true)?;
    if again.store_path != store_path {
        return Err(Error::new(
            Exit::Cache,
            format!(
                "{} now resolves to {} (a new release?), not {store_path}; run the apply again",
                opts.reference, again.store_path
            ),
        ));
    }
    again
        .token
        .ok_or_else(|| Error::new(Exit::BadResponse, "FlakeHub did not return a closure token"))
}

/// The binary cache, with the closure token as its credential.
fn http_cache<'a>(client: &'a Client, common: &Common, token: &'a Secret) -> HttpCache<'a> {
    HttpCache {
        client,
        base: common.cache_addr.clone(),
        token,
    }
}

/// Where the paths land: the image root with `--root` (unless `--store`
/// says otherwise), else the backend `--store` names (auto: the daemon,
/// else the local store).
fn open_store(
    common: &Common,
    opts: &ApplyOpts,
    keys: &TrustedKeys,
    token: &Secret,
) -> Result<Box<dyn Store>, Error> {
    match (opts.store, &common.root) {
        (StoreKind::Image, Some(root)) => Ok(Box::new(ImageStore::open(root)?)),
        (StoreKind::Image, None) => Err(Error::usage(
            "--store image needs --root DIR (the image being built)",
        )),
        _ => select::select(
            common,
            opts,
            NixCopyCache {
                url: &common.cache_addr,
                token: Some(token.expose()),
                trusted_keys: keys.keys.iter().map(|k| k.to_string()).collect(),
            },
        ),
    }
}

/// The store directory on this machine's filesystem, for the disk check.
fn store_dir(common: &Common) -> std::path::PathBuf {
    match &common.root {
        Some(r) => r.join("nix/store"),
        None => std::path::PathBuf::from("/nix/store"),
    }
}

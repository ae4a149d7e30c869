//! `fh-lite apply`: the pipeline, one call per step.
//!
//! outref (parsed by `cli`) → resolve (`flakehub`) → plan (`plan`) → fetch
//! (`fetch`, into a `store` backend) → activate (`activate`). This command
//! takes the state lock (one apply at a time) and records the attempt and
//! its result in the state file.

use std::path::Path;
use std::time::Instant;

use crate::activate::{self, Before, Report, Settings};
use crate::cache::{FetchError, HttpCache};
use crate::cli::{ApplyOpts, Common, FleetOpts, OfflineOpts};
use crate::error::{Error, Exit};
use crate::fetch;
use crate::fetch::FetchOptions;
use crate::flakehub;
use crate::http::{Client, Secret};
use crate::nix::signature::TrustedKeys;
use crate::nix::store_path::StorePath;
use crate::plan::{self, Plan};
use crate::progress::{Mode, Progress};
use crate::recover::{self, AttemptJournal};
use crate::state::{format_time, Attempt, Pending, Phase, StateDir};
use crate::store::select;
use crate::store::Store;
use crate::ui::say;

pub fn run(
    common: &Common,
    opts: &ApplyOpts,
    offline: &OfflineOpts,
    fleet: &FleetOpts,
) -> Result<Exit, Error> {
    let started = Instant::now();
    // SIGTERM/SIGINT stop the run from here on, also while the bundle is
    // read (a FIFO, a pipe that never ends; signal.rs), and never cut an
    // activation short.
    crate::signal::install()?;
    // Offline modes ([`open_offline`]): `--from` opens the bundle and
    // takes REF from its verified manifest; the bundle then stands in for
    // resolve and the cache below. Refuses an older exact version
    // (anti-downgrade) unless --allow-downgrade.
    let (bundle_opts, bundle, unproven) = match open_offline(common, opts, offline)? {
        Some(b) => (Some(b.opts), Some(b.source), b.unproven.is_some()),
        None => (None, None, false),
    };
    let opts = bundle_opts.as_ref().unwrap_or(opts);
    let direct = offline.cache.is_some() || crate::cli::is_direct(&opts.reference);
    if opts.reference.is_loose() && !direct && !opts.no_loose_warning {
        crate::ui::warn(&crate::outref::loose_warning(&opts.reference));
    }
    activate::preflight(common, opts)?;
    // --rollout-spread needs the machine id: checked before any network work.
    if fleet.rollout_spread.is_some() && !opts.dry_run {
        crate::schedule::machine_id(common.root.as_deref())?;
    }
    let state = StateDir::of(common);
    // One apply at a time (a dry run changes nothing and takes no lock).
    let _lock = (!opts.dry_run).then(|| state.lock()).transpose()?;
    if !opts.dry_run {
        // An attempt a kill interrupted is finished or undone first.
        if let Some(result) =
            recover::before_command(common, &state, &recover::Allowed::of_apply(common, opts))?
        {
            return result;
        }
        // `fh-lite hold`: the device stays where it is.
        if let Some(h) = state.current()?.hold {
            return Err(held(&h));
        }
        // A reboot recorded earlier and due now (fleet.rs).
        if let Some(exit) = crate::fleet::reboot_if_due(common, fleet, &state)? {
            return Ok(exit);
        }
    }

    // resolve
    let client = Client::new(common)?;
    // Offline: the bundle replaces FlakeHub and the cache.
    let mut token: Box<dyn crate::offline::Source + '_> = match bundle {
        Some(source) => source,
        None => Box::new(ClosureToken::resolve(&client, common, opts).map_err(interrupted_or)?),
    };
    let root_path = token.store_path().clone();
    // `--cache` (direct.rs), or a bundle made from one: the store path is
    // the reference recorded.
    let (reference, msg) = match &offline.cache {
        Some(cache) => (root_path.to_string(), format!("{root_path} from {cache}")),
        None if direct => (
            root_path.to_string(),
            format!("{root_path} from the bundle"),
        ),
        None => {
            let r = opts.reference.to_string();
            (r.clone(), format!("{r} resolves to {root_path}"))
        }
    };
    say(&msg);
    crate::outcome::store_path(&root_path);
    crate::outcome::action(opts.action.as_str());
    let mut attempt = Attempt::start(&reference, &root_path);
    if !opts.dry_run {
        // The device checked in, whatever comes of it.
        state.checked(attempt.time())?;
        stop_if_interrupted(&state, &attempt)?;
        if already_done(common, opts, &state, &root_path)? {
            return Ok(Exit::Success);
        }
    }
    // Outside --window or before the --rollout-spread time: stage only.
    let deferred = crate::fleet::gate(
        common,
        fleet,
        &state,
        &attempt.reference,
        &root_path,
        opts.dry_run,
    )?;
    // A dry run says what the real run would decide.
    let verdict = match opts.dry_run {
        true => Some(dry_verdict(common, opts, &state, &root_path, &deferred)?),
        false => None,
    };

    // plan
    let store = select::select(common, opts, &opts.trusted_keys, token.token())?;
    let store = store.as_ref();
    let plan = token
        .plan(store, &opts.trusted_keys, opts.jobs)
        .map_err(interrupted_or)?;
    if let Some((verdict, exit, msg)) = verdict {
        say(&msg);
        let out = if common.json {
            plan.render_json(verdict, exit.code())
        } else {
            plan.render_human()
        };
        crate::ui::print_stdout(&out);
        crate::outcome::outcome("dry-run");
        return Ok(Exit::Success);
    }
    stop_if_interrupted(&state, &attempt)?;
    make_room(common, store, &plan)?;

    // The journal: what ran before (the rollback target), read before
    // anything irreversible, then phase "fetching".
    let settings = Settings::of(opts);
    let before = Before::read(common)?;
    let mut pending = Pending {
        reference: attempt.reference.clone(),
        store_path: root_path.to_string(),
        phase: Phase::Fetching.as_str().to_string(),
        generation: None,
        previous_generation: before.generation,
        previous_system: before.system.clone(),
        time: attempt.time(),
        pid: std::process::id(),
        ..Pending::default()
    };
    settings.record(&mut pending);
    state.begin(&attempt, &pending)?;

    // fetch + register
    attempt.bytes_downloaded = plan.download_bytes;
    let total_paths = plan.paths.len();
    let fetched = token.fetch(
        store,
        &opts.trusted_keys,
        &FetchOptions::of(common, opts.jobs),
        plan,
    );
    if let Err(e) = fetched.map_err(interrupted_or) {
        // Stopped midway: what actually arrived, not the planned total.
        attempt.bytes_downloaded = crate::progress::downloaded().min(attempt.bytes_downloaded);
        state.record_result(&attempt, e.exit, None, false)?;
        return Err(e);
    }
    stop_if_interrupted(&state, &attempt)?;
    let secs = started.elapsed().as_secs_f64();
    let msg = match total_paths {
        0 => format!(
            "nothing to fetch: the closure of {root_path} is already in {} ({secs:.1}s)",
            store.describe()
        ),
        n => format!(
            "{} fetched into {} ({secs:.1}s)",
            crate::progress::plural(n as u64, "path"),
            store.describe()
        ),
    };
    say(&msg);
    if let Some(why) = &deferred {
        return crate::fleet::stage_deferred(common, &state, &attempt, why);
    }

    // activate: from here a signal no longer stops anything; each phase is
    // journaled before its step, so a kill is recovered by the next run.
    let mut report = Report::default();
    let mut journal = AttemptJournal::new(&state, pending);
    let result = activate::activate(
        common,
        &settings,
        &root_path,
        &before,
        &mut journal,
        &mut report,
    );
    // The generation (if the action made one) is a permanent root now, but
    // a collection that started before it existed may read our temp roots
    // only after we exit. Announcing the root again closes that window: Nix
    // passes a new temp root straight to a running collector; any later
    // collection sees the generation.
    if let Err(e) = store.add_temp_roots(std::slice::from_ref(&root_path)) {
        crate::ui::warn(&e.to_string());
    }
    let exit = result.as_ref().map_or_else(|e| e.exit, |x| *x);
    crate::outcome::generation(report.generation);
    if matches!(exit, Exit::Success | Exit::RebootNeeded) {
        crate::outcome::outcome("activated");
    }
    state.record_result(&attempt, exit, report.generation, report.path_failed)?;
    // Anti-downgrade memory (versions.rs): the exact version now applied
    // (a dry-activate applied nothing; an unsigned bundle's version is
    // unproven).
    if exit == Exit::Success && opts.action != crate::cli::Action::DryActivate && !unproven {
        remember(common, opts)?;
    }
    // Reboot need and policy (fleet.rs).
    crate::fleet::after_activation(common, opts, fleet, &state, &journal.pending, result)
}

/// The refusal of an apply while `fh-lite hold` holds the device.
fn held(h: &crate::state::Hold) -> Error {
    let on = crate::hold::on(h);
    Error::new(
        Exit::Held,
        format!(
            "this device is held on {on} since {} ('fh-lite hold'); nothing applied. 'fh-lite unhold' releases it",
            format_time(h.time)
        ),
    )
}

/// An error of resolve, plan or fetch, or Interrupted when a signal
/// caused it (a transfer stopped on purpose).
fn interrupted_or(e: impl Into<Error>) -> Error {
    match crate::signal::interrupted() {
        true => crate::signal::error(),
        false => e.into(),
    }
}

/// Before anything irreversible: when a signal arrived, record the attempt
/// as "interrupted" (clearing the journal) and stop.
fn stop_if_interrupted(state: &StateDir, attempt: &Attempt) -> Result<(), Error> {
    if !crate::signal::interrupted() {
        return Ok(());
    }
    state.record_result(attempt, Exit::Interrupted, None, false)?;
    Err(crate::signal::error())
}

/// Before anything is fetched: Err(SkippedFailed) when the path failed
/// activation before (unless --retry-failed); true when it is what this
/// machine already runs (unless --force).
/// What a real run of this apply would do, for `--dry-run`: (the `verdict`
/// of its JSON plan event, the exit the real run would give, the line said).
fn dry_verdict(
    common: &Common,
    opts: &ApplyOpts,
    state: &StateDir,
    store_path: &StorePath,
    deferred: &Option<String>,
) -> Result<(&'static str, Exit, String), Error> {
    // Read only (no corrupt file moved aside); unreadable, it is left out.
    let current = state.load().unwrap_or_else(|e| {
        crate::ui::warn(&format!(
            "dry run: {}; the verdict below leaves the state file out",
            e.message
        ));
        crate::state::State::default()
    });
    if let Some(h) = &current.hold {
        let e = held(h);
        let msg = format!("dry run: would refuse ({}): {}", e.exit.code(), e.message);
        return Ok(("held", e.exit, msg));
    }
    if !opts.retry_failed {
        let path = store_path.to_string();
        if let Some(f) = current.failed.iter().find(|f| f.store_path == path) {
            let exit = Exit::SkippedFailed;
            let msg = format!(
                "dry run: would skip ({}): {store_path} ({}) {} at {}; --retry-failed applies it anyway",
                exit.code(),
                f.reference,
                match f.result == crate::state::ROLLED_AWAY {
                    true => "was rolled away from by 'fh-lite rollback'".to_string(),
                    false => format!("failed activation ({})", f.result),
                },
                format_time(f.time)
            );
            return Ok(("skip", exit, msg));
        }
    }
    if !opts.force && activate::is_current(common, opts, store_path) {
        let msg = format!(
            "dry run: {store_path} is already current; a real run does nothing (--force re-runs activation)"
        );
        return Ok(("already-current", Exit::Success, msg));
    }
    if let Some(why) = deferred {
        let exit = Exit::Deferred;
        let msg = format!(
            "dry run: would defer ({}): {why}; a real run fetches and stages it only",
            exit.code()
        );
        return Ok(("defer", exit, msg));
    }
    let msg = format!("dry run: would {} {store_path}", opts.action.as_str());
    Ok(("activate", Exit::Success, msg))
}

fn already_done(
    common: &Common,
    opts: &ApplyOpts,
    state: &StateDir,
    store_path: &StorePath,
) -> Result<bool, Error> {
    if !opts.retry_failed {
        if let Some(f) = state.failed_entry(store_path)? {
            if f.result == crate::state::ROLLED_AWAY {
                return Err(Error::new(
                    Exit::SkippedFailed,
                    format!(
                        "{store_path} ({}) was rolled away from by 'fh-lite rollback' at {}; skipped. Run again with --retry-failed to apply it anyway",
                        f.reference,
                        format_time(f.time)
                    ),
                ));
            }
            return Err(Error::new(
                Exit::SkippedFailed,
                format!(
                    "{store_path} ({}) failed activation at {} ({}); skipped. Publish a fixed release, or run again with --retry-failed to try it anyway",
                    f.reference,
                    format_time(f.time),
                    f.result
                ),
            ));
        }
    }
    // An attempt still pending for this path is not current (recovery
    // clears it, so this is a safeguard).
    let pending = state.pending()?;
    if pending.is_some_and(|p| p.store_path == store_path.to_string()) {
        return Ok(false);
    }
    if opts.force || !activate::is_current(common, opts, store_path) {
        return Ok(false);
    }
    say(&format!(
        "{store_path} is already the current system; nothing to do (--force re-runs activation)"
    ));
    crate::outcome::outcome("already-current");
    crate::outcome::generation(
        crate::activate::Ctx::new(common)
            .profile
            .current()
            .ok()
            .flatten(),
    );
    Ok(true)
}

/// Check the store's filesystem has room for the unpacked closure, and
/// keep the closure from a concurrent garbage collection until this
/// process ends (a root's closure is kept with it).
fn make_room(common: &Common, store: &dyn Store, plan: &Plan) -> Result<(), Error> {
    if store.reads_nar() {
        let root = common.root.as_deref().unwrap_or(Path::new("/"));
        plan::check_disk_space(&root.join("nix/store"), plan.unpack_bytes)?;
    }
    Ok(store.add_temp_roots(&plan.closure())?)
}

/// The FlakeHub source (offline.rs has the bundle one).
impl crate::offline::Source for ClosureToken<'_> {
    fn store_path(&self) -> &StorePath {
        &self.store_path
    }
    fn token(&self) -> &Secret {
        &self.token
    }
    fn cache(&self) -> Box<dyn crate::cache::CacheClient + '_> {
        Box::new(ClosureToken::cache(self))
    }
    fn plan(&mut self, store: &dyn Store, keys: &TrustedKeys, jobs: usize) -> Result<Plan, Error> {
        ClosureToken::plan(self, store, keys, jobs)
    }
    fn fetch(
        &mut self,
        store: &dyn Store,
        keys: &TrustedKeys,
        how: &FetchOptions,
        plan: Plan,
    ) -> Result<(), Error> {
        ClosureToken::fetch(self, store, keys, how, plan)
    }
}

/// FlakeHub as the source of `fetch` and `bundle create`: the
/// closure token, renewed when it expires, as apply uses it.
pub fn flakehub_source<'a>(
    client: &'a Client,
    common: &'a Common,
    opts: &'a ApplyOpts,
) -> Result<Box<dyn crate::offline::Source + 'a>, Error> {
    Ok(Box::new(ClosureToken::resolve(client, common, opts)?))
}

/// How often one apply may ask FlakeHub for a fresh closure token.
const MAX_TOKEN_REFRESHES: u32 = 8;

/// The closure token and its renewal. It lasts about an hour; a long
/// transfer on a slow link can outlive it. Then FlakeHub is asked for a
/// fresh one (for the same store path), and the work goes on.
struct ClosureToken<'a> {
    client: &'a Client,
    common: &'a Common,
    opts: &'a ApplyOpts,
    store_path: StorePath,
    token: Secret,
    refreshes: u32,
}

impl<'a> ClosureToken<'a> {
    fn resolve(
        client: &'a Client,
        common: &'a Common,
        opts: &'a ApplyOpts,
    ) -> Result<ClosureToken<'a>, Error> {
        let r = flakehub::resolve_with_token(client, common, &opts.reference)?;
        Ok(ClosureToken {
            client,
            common,
            opts,
            store_path: r.store_path,
            token: r.token,
            refreshes: 0,
        })
    }

    /// The binary cache, with the closure token as its credential.
    fn cache(&self) -> HttpCache<'_> {
        HttpCache {
            client: self.client,
            base: self.common.cache_addr.clone(),
            token: &self.token,
        }
    }

    /// Walk the closure (plan), renewing the token when it is refused.
    fn plan(&mut self, store: &dyn Store, keys: &TrustedKeys, jobs: usize) -> Result<Plan, Error> {
        loop {
            match plan::plan(&self.cache(), store, keys, &self.store_path, jobs) {
                Ok(p) => return Ok(p),
                Err(e) if self.renew(&e, store)? => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Fetch the plan's paths into the store; when the token is renewed
    /// midway, plan again and go on with what is still missing.
    fn fetch(
        &mut self,
        store: &dyn Store,
        keys: &TrustedKeys,
        how: &FetchOptions,
        mut plan: Plan,
    ) -> Result<(), Error> {
        let jobs = how.jobs;
        let progress = Progress::new(Mode::detect(self.common.quiet, self.common.json));
        loop {
            progress.plan(&plan);
            let Err(e) = fetch::fetch_all(&self.cache(), store, &plan, how, &progress) else {
                return Ok(());
            };
            if !self.renew(&e, store)? {
                return Err(e.into());
            }
            let rest = plan::plan(&self.cache(), store, keys, &plan.root, jobs)?;
            // Only go on while each token gets something done.
            if rest.paths.len() >= plan.paths.len() {
                return Err(e.into());
            }
            plan = rest;
        }
    }

    /// After `e`: Ok(true) when the cache refused the token and a fresh
    /// one was obtained, so the step is worth running again.
    fn renew(&mut self, e: &FetchError, store: &dyn Store) -> Result<bool, Error> {
        if !e.is_token_refused() || !store.reads_nar() || self.refreshes >= MAX_TOKEN_REFRESHES {
            return Ok(false);
        }
        self.refreshes += 1;
        say("the cache refused the closure token (expired?); asking FlakeHub for a fresh one");
        // The reference must still resolve to the same path (a loose
        // requirement may have moved on).
        let reference = &self.opts.reference;
        let again = flakehub::resolve_with_token(self.client, self.common, reference)?;
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

/// Before resolve: with `--from`, open and verify the bundle (with
/// `--cache`, open that cache: direct.rs); for an exact
/// version (from REF or the manifest), refuse a downgrade.
fn open_offline(
    common: &Common,
    opts: &ApplyOpts,
    offline: &OfflineOpts,
) -> Result<Option<crate::offline::Opened>, Error> {
    let opened = match (&offline.from, &offline.cache) {
        (Some(from), _) => Some(crate::bundle::source::open(common, opts, offline, from)?),
        (None, Some(_)) => Some(crate::direct::open(common, opts, offline)?),
        (None, None) => None,
    };
    let reference = opened
        .as_ref()
        .map_or(&opts.reference, |o| &o.opts.reference);
    // `dry-activate` changes nothing, so looking at an older release is
    // no downgrade.
    if !offline.allow_downgrade && opts.action != crate::cli::Action::DryActivate {
        let state = crate::state::StateDir::of(common);
        match opened.as_ref().and_then(|o| o.unproven.as_deref()) {
            Some(what) => crate::versions::check_unproven(&state, reference, what)?,
            None => crate::versions::check(&state, reference)?,
        }
    }
    Ok(opened)
}

/// After a successful apply: remember its exact version (if any).
fn remember(common: &Common, opts: &ApplyOpts) -> Result<(), Error> {
    crate::versions::remember(&crate::state::StateDir::of(common), &opts.reference)
}

//! `fh-lite apply`: the pipeline, one call per step.
//!
//! outref (parsed by `cli`) → resolve (`flakehub`) → plan (`plan`) → fetch
//! (`fetch`, into a `store` backend) → activate (`activate`). This command
//! takes the state lock (one apply at a time) and records the attempt and
//! its result in the state file.

use std::time::Instant;

use crate::activate::{self, Before, Report, Settings};
use crate::cmd::confirm_boot::Settled;
use crate::cmd::recover;
use crate::error::{Error, Exit};
use crate::journal::{Allowed, AttemptJournal};
use crate::machine::Machine;
use crate::nix::store_path::StorePath;
use crate::options::{ApplyOpts, Common, FleetOpts, OfflineOpts, Target};
use crate::pipeline::Pipeline;
use crate::plan::Plan;
use crate::source::Source;
use crate::state::{format_time, Attempt, Pending, Phase, StateDir};
use crate::store::select::StoreChoice;
use crate::ui::say;

/// `fh-lite apply`: checks that need nothing fetched, then under the lock
/// what earlier runs left, resolve, the fleet's gate, plan, the journal,
/// fetch and activate; the attempt and its result go to the state file.
pub fn run(
    common: &Common,
    opts: &ApplyOpts,
    offline: &OfflineOpts,
    fleet: &FleetOpts,
) -> Result<Exit, Error> {
    let started = Instant::now();
    let machine = common.machine();
    let run = Apply {
        common,
        opts,
        fleet,
        store: common.store(opts.store, opts.daemon_socket.as_deref()),
        state: machine.state(),
        machine,
    };
    // SIGTERM/SIGINT stop the run from here on, also while the bundle is
    // read (a FIFO, a pipe that never ends; signal.rs), and never cut an
    // activation short.
    crate::signal::install()?;
    let offline_source = run.check_first(offline)?;
    // One apply at a time (a dry run changes nothing and takes no lock).
    let _lock = (!opts.dry_run).then(|| run.state.lock()).transpose()?;
    if !opts.dry_run {
        if let Some(result) = run.settle_earlier_runs()? {
            return result;
        }
    }

    // resolve (offline: the bundle or the cache was opened above)
    let (source, mut attempt) = run.resolve(offline_source, offline)?;
    if !opts.dry_run && run.check_in(&attempt)? {
        return Ok(Exit::Success);
    }
    // Outside --window or before the --rollout-spread time: stage only.
    let deferred = crate::fleet::gate(
        &run.machine,
        fleet,
        &run.state,
        &attempt.reference,
        source.store_path(),
        opts.dry_run,
    )?;
    if opts.dry_run {
        return run.dry_run(source, &deferred);
    }

    // plan
    let mut pipeline = Pipeline::new(&run.store, common.progress(), opts, source)?;
    let plan = pipeline.plan().map_err(interrupted_or)?;
    stop_if_interrupted(&run.state, &attempt)?;
    pipeline.make_room(run.machine.root(), &plan)?;

    // The journal: what ran before (the rollback target), read before
    // anything irreversible, then phase "fetching".
    let journaled = run.begin(&attempt)?;

    // fetch + register
    run.fetch(&mut pipeline, plan, &mut attempt, started)?;
    if let Some(why) = &deferred {
        return crate::fleet::stage_deferred(&run.machine, &run.state, &attempt, why);
    }

    // activate: from here a signal no longer stops anything; each phase is
    // journaled before its step, so a kill is recovered by the next run.
    run.activate(&pipeline, &attempt, journaled)
}

/// One apply: what its steps share.
struct Apply<'a> {
    common: &'a Common,
    opts: &'a ApplyOpts,
    fleet: &'a FleetOpts,
    machine: Machine,
    /// The store it uses (`--store`).
    store: StoreChoice,
    state: StateDir,
}

/// An attempt's journal, begun: what activation and recovery go on from.
struct Journaled {
    settings: Settings,
    before: Before,
    pending: Pending,
}

impl<'a> Apply<'a> {
    /// What is refused before anything is locked, resolved or fetched.
    /// Offline targets ([`open_offline`]): `--from` opens the bundle and
    /// takes REF from its verified manifest; the bundle (or the `--cache`)
    /// then stands in for resolve and the FlakeHub cache. Refuses an
    /// older exact version (anti-downgrade) unless --allow-downgrade.
    fn check_first(&self, offline: &OfflineOpts) -> Result<Option<Box<dyn Source + 'a>>, Error> {
        let (common, opts) = (self.common, self.opts);
        let offline_source = open_offline(common, opts, offline)?;
        let reference = match &offline_source {
            Some(source) => source.reference(),
            None => opts.target.reference(),
        };
        if let Some(r) = reference.filter(|r| r.is_loose() && !opts.no_loose_warning) {
            crate::ui::warn(&crate::outref::loose_warning(r));
        }
        activate::preflight(&self.machine, opts)?;
        // --rollout-spread needs the machine id: checked before any network work.
        if self.fleet.rollout_spread.is_some() && !opts.dry_run {
            crate::fleet::schedule::machine_id(self.machine.root())?;
        }
        Ok(offline_source)
    }

    /// Under the lock, before resolve: what earlier runs left is settled
    /// first. Some(result) ends this run with it.
    fn settle_earlier_runs(&self) -> Result<Option<Result<Exit, Error>>, Error> {
        let (common, fleet, state) = (self.common, self.fleet, &self.state);
        // An attempt a kill interrupted is finished or undone first.
        let allowed = Allowed::of_apply(&self.machine, self.opts, self.store.clone());
        if let Some(result) = recover::before_command(common, state, &allowed)? {
            return Ok(Some(result));
        }
        // A trial boot journaled earlier is settled first (cmd/confirm_boot.rs).
        match crate::cmd::confirm_boot::settle(common, fleet, state)? {
            None | Some(Settled::Committed | Settled::Undone) => {}
            Some(Settled::Wait(t)) => {
                return Ok(Some(crate::cmd::confirm_boot::reboot_into(
                    common, fleet, state, &t,
                )))
            }
            Some(Settled::Failed(e, path)) => {
                return Ok(Some(Err(crate::cmd::confirm_boot::reboot_back(
                    common, fleet, e, &path,
                ))))
            }
        }
        // `fh-lite hold`: the device stays where it is.
        if let Some(h) = state.current()?.hold {
            return Ok(Some(Err(held(&h))));
        }
        // A reboot recorded earlier and due now (fleet/mod.rs).
        Ok(crate::fleet::reboot_if_due(&self.machine, fleet, state)?.map(Ok))
    }

    /// The source (offline: opened already) and the attempt, said: what
    /// is applied, from where.
    fn resolve(
        &self,
        offline_source: Option<Box<dyn Source + 'a>>,
        offline: &OfflineOpts,
    ) -> Result<(Box<dyn Source + 'a>, Attempt), Error> {
        let source = match offline_source {
            Some(source) => source,
            None => crate::source::open(
                &self.common.flakehub(),
                &self.common.http(),
                self.opts,
                offline,
            )
            .map_err(interrupted_or)?,
        };
        let attempt = self.announce(source.as_ref());
        Ok((source, attempt))
    }

    /// The device checked in, whatever comes of it; Ok(true): nothing to
    /// do ([`already_done`]).
    fn check_in(&self, attempt: &Attempt) -> Result<bool, Error> {
        self.state.checked(attempt.time())?;
        stop_if_interrupted(&self.state, attempt)?;
        already_done(self.common, self.opts, &self.state, &attempt.store_path)
    }

    /// Say what is applied, from where; the attempt starts.
    fn announce(&self, source: &dyn Source) -> Attempt {
        let root_path = source.store_path();
        // `--cache` (source/cache.rs), or a bundle made from one: the store path is
        // the reference recorded.
        let (reference, msg) = match (&self.opts.target, source.reference()) {
            (Target::StorePath { cache, .. }, _) => {
                (root_path.to_string(), format!("{root_path} from {cache}"))
            }
            (_, None) => (
                root_path.to_string(),
                format!("{root_path} from the bundle"),
            ),
            (_, Some(r)) => (r.to_string(), format!("{r} resolves to {root_path}")),
        };
        say(&msg);
        crate::outcome::store_path(root_path);
        crate::outcome::action(self.opts.action.as_str());
        Attempt::start(&reference, root_path)
    }

    /// `--dry-run`: the plan and what the real run would decide; nothing
    /// changes.
    fn dry_run(
        &self,
        source: Box<dyn Source + 'a>,
        deferred: &Option<String>,
    ) -> Result<Exit, Error> {
        let (common, opts) = (self.common, self.opts);
        let root_path = source.store_path().clone();
        let (verdict, exit, msg) = dry_verdict(common, opts, &self.state, &root_path, deferred)?;
        let mut pipeline = Pipeline::new(&self.store, common.progress(), opts, source)?;
        let plan = pipeline.plan().map_err(interrupted_or)?;
        say(&msg);
        let out = if common.json {
            plan.render_json(verdict, exit.code())
        } else {
            plan.render_human()
        };
        crate::ui::print_stdout(&out);
        crate::outcome::outcome("dry-run");
        Ok(Exit::Success)
    }

    /// The journal of `attempt` begins (phase "fetching"): the settings
    /// activation runs with, and the system before it (the rollback
    /// target), read before anything irreversible.
    fn begin(&self, attempt: &Attempt) -> Result<Journaled, Error> {
        let (opts, fleet) = (self.opts, self.fleet);
        let mut settings = Settings::of(opts);
        if opts.trial && fleet.reboot_if_needed && fleet.boot_loader != crate::boot::Choice::None {
            settings.boot = Some(crate::boot::BootTrial {
                choice: fleet.boot_loader,
                at: crate::boot::Where {
                    root: self.machine.root.clone(),
                    efivars: fleet.efivars.clone(),
                    profile: self.machine.profile.clone(),
                    firmware: fleet.firmware_dir.clone(),
                },
            });
        }
        let before = Before::read(&self.machine)?;
        let mut pending = Pending {
            reference: attempt.reference.clone(),
            store_path: attempt.store_path.to_string(),
            phase: Phase::Fetching.as_str().to_string(),
            generation: None,
            previous_generation: before.generation,
            previous_system: before.system.clone(),
            time: attempt.time(),
            pid: std::process::id(),
            ..Pending::default()
        };
        settings.record(&mut pending);
        self.state.begin(attempt, &pending)?;
        Ok(Journaled {
            settings,
            before,
            pending,
        })
    }

    /// Fetch `plan` into the store and register it; a failure is the
    /// attempt's result.
    fn fetch(
        &self,
        pipeline: &mut Pipeline<'_>,
        plan: Plan,
        attempt: &mut Attempt,
        started: Instant,
    ) -> Result<(), Error> {
        let state = &self.state;
        attempt.bytes_downloaded = plan.download_bytes;
        let total_paths = plan.paths.len();
        let fetched = pipeline.fetch(&self.common.fetch(self.opts.jobs), plan);
        if let Err(e) = fetched.map_err(interrupted_or) {
            // Stopped midway: what actually arrived, not the planned total.
            attempt.bytes_downloaded = crate::progress::downloaded().min(attempt.bytes_downloaded);
            state.record_result(attempt, e.exit, None, false)?;
            return Err(e);
        }
        stop_if_interrupted(state, attempt)?;
        let store = pipeline.store();
        let secs = started.elapsed().as_secs_f64();
        let root_path = &attempt.store_path;
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
        Ok(())
    }

    /// Activate, record the result, then reboot as the policy says.
    fn activate(
        &self,
        pipeline: &Pipeline<'_>,
        attempt: &Attempt,
        journaled: Journaled,
    ) -> Result<Exit, Error> {
        let (opts, fleet, state) = (self.opts, self.fleet, &self.state);
        let root_path = &attempt.store_path;
        let Journaled {
            settings,
            before,
            pending,
        } = journaled;
        let mut report = Report::default();
        let mut journal = AttemptJournal::new(state, pending);
        let result = activate::activate(
            &self.machine,
            &settings,
            root_path,
            &before,
            &mut journal,
            &mut report,
        );
        // The generation (if the action made one) is a permanent root now, but
        // a collection that started before it existed may read our temp roots
        // only after we exit. Announcing the root again closes that window: Nix
        // passes a new temp root straight to a running collector; any later
        // collection sees the generation.
        if let Err(e) = pipeline
            .store()
            .add_temp_roots(std::slice::from_ref(root_path))
        {
            crate::ui::warn(&e.to_string());
        }
        let exit = result.as_ref().map_or_else(|e| e.exit, |x| *x);
        crate::outcome::generation(report.generation);
        if matches!(exit, Exit::Success | Exit::RebootNeeded) {
            crate::outcome::outcome("activated");
        }
        state.record_result(attempt, exit, report.generation, report.path_failed)?;
        // Anti-downgrade memory (versions.rs): the exact version now applied
        // (a dry-activate applied nothing; an unsigned bundle's version is
        // unproven).
        let unproven = pipeline.source().unproven().is_some();
        if exit == Exit::Success && opts.action != crate::options::Action::DryActivate && !unproven
        {
            if let Some(reference) = pipeline.source().reference() {
                crate::versions::remember(state, reference)?;
            }
        }
        // A trial boot is armed: reboot into it (fleet/mod.rs).
        if let Some(t) = &report.trial_boot {
            return crate::cmd::confirm_boot::reboot_into(self.common, fleet, state, t);
        }
        // Reboot need and policy (fleet/mod.rs).
        crate::fleet::after_activation(&self.machine, opts, fleet, state, &journal.pending, result)
    }
}

/// The refusal of an apply while `fh-lite hold` holds the device.
fn held(h: &crate::state::Hold) -> Error {
    let on = crate::cmd::hold::on(h);
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
    if !opts.force && activate::is_current(&common.machine(), opts, store_path) {
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
    if opts.force || !activate::is_current(&common.machine(), opts, store_path) {
        return Ok(false);
    }
    say(&format!(
        "{store_path} is already the current system; nothing to do (--force re-runs activation)"
    ));
    crate::outcome::outcome("already-current");
    crate::outcome::generation(
        crate::activate::Ctx::new(&common.machine())
            .profile
            .current()
            .ok()
            .flatten(),
    );
    Ok(true)
}

/// Before resolve: with `--from`, open and verify the bundle (with
/// `--cache`, open that cache: source/cache.rs); for an exact version
/// (from REF or the manifest), refuse a downgrade.
fn open_offline<'a>(
    common: &'a Common,
    opts: &'a ApplyOpts,
    offline: &OfflineOpts,
) -> Result<Option<Box<dyn Source + 'a>>, Error> {
    let opened = match opts.target {
        Target::FlakeHub(_) => None,
        Target::Bundle(_) | Target::StorePath { .. } => Some(crate::source::open(
            &common.flakehub(),
            &common.http(),
            opts,
            offline,
        )?),
    };
    let reference = match &opened {
        Some(source) => source.reference(),
        None => opts.target.reference(),
    };
    // `dry-activate` changes nothing, so looking at an older release is
    // no downgrade.
    if let Some(reference) = reference {
        if !offline.allow_downgrade && opts.action != crate::options::Action::DryActivate {
            let state = common.machine().state();
            match opened.as_ref().and_then(|o| o.unproven()) {
                Some(what) => crate::versions::check_unproven(&state, reference, what)?,
                None => crate::versions::check(&state, reference)?,
            }
        }
    }
    Ok(opened)
}

//! `fh-lite confirm-boot` (the boot-time unit): settle a journaled trial
//! boot (boot/mod.rs); apply, rollback and recover do it first too.
//!
//! [`settle`] reads state.json's `trial_boot`, decides ([`crate::boot::decide`])
//! and acts:
//! - the new system is booted and its health check passes: commit —
//!   the new generation's `switch-to-configuration boot` runs (its builder
//!   makes it the boot loader's default: loader.conf, grub.cfg), then the
//!   one-shot and the pin are removed; the profile stays on it;
//! - it fails its health check, or the machine came back on the old system
//!   ("did not boot"): fall back — the profile returns to the generation
//!   that was running, its `switch-to-configuration boot` makes it the
//!   loader's default again, then the pin goes; the path is recorded as
//!   failed and never retried without `--retry-failed`;
//! - the trial stopped before its one-shot was set: undo it the same way,
//!   the path not failed.
//!
//! The fallback is journaled first (phase "falling-back", with its
//! reason), so a cut during it is redone, not confirmed: the pin stays
//! until the old generation's `boot` has run.

use std::time::Duration;

use crate::activate::Ctx;
use crate::boot::{boot_id, decide, Decision, Loader, Step, TrialBoot, TrialOutcome};
use crate::error::{Error, Exit};
use crate::options::{Common, FleetOpts};
use crate::state::{format_time, StateDir};
use crate::ui::say;

/// The phase a fallback journals before it starts.
pub const FALLING_BACK: &str = "falling-back";

/// What [`settle`] did.
#[derive(Debug)]
pub enum Settled {
    /// The new system passed: committed.
    Committed,
    /// Undone before its one-shot took effect (the path is not failed).
    Undone,
    /// Same boot, the reboot still to come.
    Wait(Box<TrialBoot>),
    /// Fell back: "did not boot" (DidNotBoot) or a failed health check
    /// (RolledBack); the error to report, and the store path.
    Failed(Error, String),
}

/// Settle the journaled trial boot, if any (the caller holds the lock).
pub fn settle(
    common: &Common,
    fleet: &FleetOpts,
    state: &StateDir,
) -> Result<Option<Settled>, Error> {
    let Some(t) = state.trial_boot()? else {
        return Ok(None);
    };
    let root = common.root.as_deref();
    let loader = Loader::of_journal(
        &t,
        root,
        fleet.efivars.as_deref(),
        fleet.firmware_dir.as_deref(),
        &common.profile,
    );
    let machine = common.machine();
    let ctx = Ctx::new(&machine);
    let gen = |t: &TrialBoot| {
        t.generation
            .map_or(String::new(), |n| format!(" (generation {n})"))
    };
    if t.phase == FALLING_BACK {
        let (exit, why) = match t.failure.as_deref() {
            Some(w) if w.starts_with("did not boot") => (Exit::DidNotBoot, w.to_string()),
            Some(w) => (Exit::RolledBack, w.to_string()),
            None => (Exit::Success, String::new()),
        };
        return fall_back(&ctx, &loader, state, t, exit, &why).map(Some);
    }
    let booted = crate::boot::booted_system(root);
    match decide(&t, &boot_id(), booted.as_deref()) {
        Decision::Wait => Ok(Some(Settled::Wait(Box::new(t)))),
        Decision::Check => {
            say(&format!(
                "trial boot: {}{} is running; checking it",
                t.store_path,
                gen(&t)
            ));
            if let Some(cmd) = &t.health_check {
                let timeout = Duration::from_secs(t.health_timeout.max(1));
                if let Err(why) = crate::activate::run::health_check(&ctx, cmd, timeout) {
                    let why = format!("{why} on its trial boot");
                    return fall_back(&ctx, &loader, state, t, Exit::RolledBack, &why).map(Some);
                }
            }
            // The commit is the new generation's `boot` (it makes itself
            // the default: loader.conf, grub.cfg, config.txt); redone if
            // cut, the check runs again. The pin stays until it has run.
            if let (true, Some(n)) = (loader.entries_by_running(), t.generation) {
                if crate::activate::runs_commands(
                    &ctx,
                    crate::options::Action::Boot,
                    t.install_bootloader,
                ) {
                    let link = ctx.logical(&ctx.profile.link_path(n));
                    let script = link.join("bin/switch-to-configuration");
                    let limit = t.activation_timeout.map(Duration::from_secs);
                    let ran = ctx.run(&script, &["boot"], t.install_bootloader, limit)?;
                    if ran.code() != Some(0) {
                        let why = format!(
                            "{} boot failed at the commit after its trial boot",
                            script.display()
                        );
                        return fall_back(&ctx, &loader, state, t, Exit::RolledBack, &why)
                            .map(Some);
                    }
                }
            }
            // loader.conf's default checked on the new entry (a journal of
            // an earlier version: its builder's value put back), then the
            // pin goes.
            loader.commit_default(&t)?;
            loader.release()?;
            let msg = format!(
                "trial boot: {}{} booted and passed its health check; committed (it is the boot default now)",
                t.store_path,
                gen(&t)
            );
            say(&msg);
            finish(state, &t, "committed", &msg, None)?;
            Ok(Some(Settled::Committed))
        }
        Decision::DidNotBoot => {
            let why = format!(
                "did not boot: the machine came back on {} after the trial boot of {}{} journaled at {}",
                t.previous_system.as_deref().unwrap_or("the previous system"),
                t.store_path,
                gen(&t),
                format_time(t.time)
            );
            fall_back(&ctx, &loader, state, t, Exit::DidNotBoot, &why).map(Some)
        }
        Decision::Undo => fall_back(&ctx, &loader, state, t, Exit::Success, "").map(Some),
    }
}

/// Before `fh-lite rollback` or `recover`: settle a journaled trial boot;
/// one still waiting for its reboot is undone (the operator's command
/// decides now). A fallback's error is reported, and the command goes on.
pub fn settle_before(common: &Common, state: &StateDir) -> Result<(), Error> {
    let fleet = FleetOpts::default();
    let waiting = match settle(common, &fleet, state)? {
        Some(Settled::Wait(t)) => t,
        Some(Settled::Failed(e, _)) => {
            crate::ui::error(&e.message);
            return Ok(());
        }
        _ => return Ok(()),
    };
    let loader = Loader::of_journal(
        &waiting,
        common.root.as_deref(),
        None,
        None,
        &common.profile,
    );
    match fall_back(
        &Ctx::new(&common.machine()),
        &loader,
        state,
        *waiting,
        Exit::Success,
        "",
    )? {
        Settled::Failed(e, _) => Err(e),
        _ => Ok(()),
    }
}

/// Profile back, the old generation's `boot`, pin and one-shot removed,
/// the outcome recorded. `exit` Success: an undo (not failed).
fn fall_back(
    ctx: &Ctx,
    loader: &Loader,
    state: &StateDir,
    mut t: TrialBoot,
    exit: Exit,
    why: &str,
) -> Result<Settled, Error> {
    let started = Step::parse(&t.phase) != Step::Pinning || t.phase == FALLING_BACK;
    t.phase = FALLING_BACK.to_string();
    t.failure = (exit != Exit::Success).then(|| why.to_string());
    state.set_trial_boot(Some(&t))?;
    crate::activate::trial_boot::restore(ctx, loader, &t, started)?;
    let (result, msg) = match exit {
        Exit::Success => (
            "undone",
            format!(
                "trial boot of {} undone: it stopped before its one-shot boot; the default stays {}",
                t.store_path,
                t.pinned.as_deref().unwrap_or("the running entry")
            ),
        ),
        Exit::DidNotBoot => (
            "did-not-boot",
            format!(
                "{} {why}; fell back (the default stays {}); it is not tried again without --retry-failed",
                t.store_path,
                t.pinned.as_deref().unwrap_or("the running entry")
            ),
        ),
        _ => (
            "health-check-failed",
            format!(
                "{} {why}; fell back: the boot default is {} again, reboot to return to it; it is not tried again without --retry-failed",
                t.store_path,
                t.pinned.as_deref().unwrap_or("the running entry")
            ),
        ),
    };
    let failed = (exit != Exit::Success).then_some(exit);
    finish(state, &t, result, &msg, failed)?;
    match exit {
        Exit::Success => {
            say(&msg);
            Ok(Settled::Undone)
        }
        _ => Ok(Settled::Failed(Error::new(exit, msg), t.store_path.clone())),
    }
}

fn finish(
    state: &StateDir,
    t: &TrialBoot,
    result: &str,
    reason: &str,
    failed: Option<Exit>,
) -> Result<(), Error> {
    let outcome = TrialOutcome {
        reference: t.reference.clone(),
        store_path: t.store_path.clone(),
        generation: t.generation,
        result: result.to_string(),
        reason: reason.to_string(),
        time: crate::util::unix_now(),
    };
    state.end_trial_boot(&outcome, failed)
}

/// `fh-lite confirm-boot`: settle the trial boot, if any, under the lock.
pub fn run(common: &Common, fleet: &FleetOpts) -> Result<Exit, Error> {
    let state = common.machine().state();
    let _lock = state.lock()?;
    match settle(common, fleet, &state)? {
        None => {
            say("no trial boot to confirm");
            Ok(Exit::Success)
        }
        Some(Settled::Committed | Settled::Undone) => Ok(Exit::Success),
        Some(Settled::Wait(t)) => {
            say(&format!(
                "the trial boot of {} waits for its reboot (this is still the boot that journaled it)",
                t.store_path
            ));
            Ok(Exit::RebootNeeded)
        }
        Some(Settled::Failed(e, path)) => Err(reboot_back(common, fleet, e, &path)),
    }
}

/// Reboot into the armed trial boot `t` (fleet/mod.rs). tryboot: the
/// request is journaled first (`reboot_requested`: only a machine that
/// came back after it did not boot the new system), and withdrawn when
/// the reboot did not start.
pub fn reboot_into(
    common: &Common,
    fleet: &FleetOpts,
    state: &StateDir,
    t: &TrialBoot,
) -> Result<Exit, Error> {
    let journaled = state.trial_boot()?.filter(|j| {
        j.loader == "tryboot" && j.store_path == t.store_path && j.phase == Step::Rebooting.as_str()
    });
    let Some(mut j) = journaled else {
        return crate::fleet::trial_reboot(&common.machine(), fleet, t);
    };
    j.reboot_requested = Some(boot_id());
    state.set_trial_boot(Some(&j))?;
    let exit = crate::fleet::trial_reboot(&common.machine(), fleet, &j)?;
    if exit != Exit::Success {
        j.reboot_requested = None;
        state.set_trial_boot(Some(&j))?;
    }
    Ok(exit)
}

/// A failed health check on the new system: the default is the previous
/// system again; with `--reboot if-needed` (inside the window) reboot
/// into it. The error stands either way.
pub fn reboot_back(common: &Common, fleet: &FleetOpts, e: Error, path: &str) -> Error {
    if e.exit != Exit::RolledBack {
        return e;
    }
    match crate::fleet::reboot_back(&common.machine(), fleet, path) {
        Ok(_) => e,
        Err(r) => {
            crate::ui::warn(&r.message);
            e
        }
    }
}

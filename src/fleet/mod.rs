//! Fleet options of `apply`: the reboot policy (`--reboot`,
//! `--reboot-window`), the activation window (`--window`) and the staged
//! rollout (`--rollout-spread`). cmd/apply.rs calls these at three points:
//! [`reboot_if_due`] after recovery, [`gate`] once the store path is
//! known, and [`after_activation`] once the attempt is recorded.
//!
//! A reboot need is kept in state.json (`fleet.reboot`: the attempt's
//! journal entry). Before `systemctl reboot`, that entry becomes the
//! journal's `pending` with phase "health-check", in the same write that
//! clears the need; after the reboot the next apply, rollback or recover
//! finds it (its pid is gone) and resumes it as crash recovery does:
//! activation re-run (a no-op on the booted system), then the health
//! check, then committed, or rolled back to its previous system.

pub mod metrics;
pub mod schedule;

use crate::error::{Error, Exit};
use crate::machine::Machine;
use crate::nix::store_path::StorePath;
use crate::options::{ApplyKind, ApplyOpts, FleetOpts};
use crate::state::{format_time, Attempt, Pending, Phase, Scheduled, StateDir};
use crate::ui::say;
use schedule::Window;

/// How many rollout entries state.json keeps.
const MAX_SCHEDULED: usize = 20;

/// Before resolve: a reboot recorded earlier, due now (`--reboot
/// if-needed`, inside the reboot window, not under `--root`), is done:
/// Some(exit) ends the run.
pub fn reboot_if_due(
    machine: &Machine,
    fleet: &FleetOpts,
    state: &StateDir,
) -> Result<Option<Exit>, Error> {
    if !fleet.reboot_if_needed || machine.root.is_some() {
        return Ok(None);
    }
    let Some(need) = state.fleet()?.reboot else {
        return Ok(None);
    };
    if booted_system(machine).as_deref() == Some(need.store_path.as_str()) {
        // Booted into it already (a reboot by other means).
        state.update_fleet(|f, _| f.reboot = None)?;
        return Ok(None);
    }
    if !window_open(fleet.reboot_window) {
        say(&waiting(&need.store_path, fleet.reboot_window));
        return Ok(None);
    }
    reboot(state, &need).map(Some)
}

/// Once the store path is known: Some(why) when it is to be staged, not
/// activated (outside `--window`, or before this device's rollout time,
/// which the first run that sees the path records).
pub fn gate(
    machine: &Machine,
    fleet: &FleetOpts,
    state: &StateDir,
    reference: &str,
    store_path: &StorePath,
    dry_run: bool,
) -> Result<Option<String>, Error> {
    let now = schedule::now();
    if let Some(spread) = fleet.rollout_spread {
        let id = match (dry_run, schedule::machine_id(machine.root())) {
            (_, Ok(id)) => id,
            // A dry run without a machine id cannot tell; the real run refuses.
            (true, Err(_)) => return Ok(None),
            (false, Err(e)) => return Err(e),
        };
        let path = store_path.to_string();
        let delay = schedule::rollout_delay(&id, &path, spread);
        let fresh = Scheduled {
            store_path: path.clone(),
            reference: reference.to_string(),
            first_seen: now,
            activate_at: now + delay,
        };
        // A recorded time in the future beyond the spread was recorded
        // under a wrong clock (or written by someone else): recomputed
        // from now, never trusted to defer a release for years.
        let wrong =
            |s: &Scheduled| s.first_seen > now || s.activate_at > now.saturating_add(spread);
        let mut entry = Scheduled::default();
        let mut recomputed = None;
        if dry_run {
            // What the real run would record, recording nothing.
            let known = state.load().ok().and_then(|s| s.fleet).unwrap_or_default();
            entry = match known.rollout.into_iter().find(|s| s.store_path == path) {
                Some(s) if wrong(&s) => {
                    recomputed = Some(s.activate_at);
                    fresh
                }
                Some(s) => s,
                None => fresh,
            };
        } else {
            state.update_fleet(|f, _| {
                match f.rollout.iter_mut().find(|s| s.store_path == path) {
                    Some(s) if wrong(s) => {
                        recomputed = Some(s.activate_at);
                        *s = fresh.clone();
                    }
                    Some(_) => {}
                    None => f.rollout.push(fresh.clone()),
                }
                let over = f.rollout.len().saturating_sub(MAX_SCHEDULED);
                f.rollout.drain(..over);
                entry = f
                    .rollout
                    .iter()
                    .find(|s| s.store_path == path)
                    .cloned()
                    .unwrap_or_default();
            })?;
        }
        if let Some(was) = recomputed {
            crate::ui::warn(&format!(
                "rollout: {path} was recorded to activate at {}, beyond now plus the {} spread (a wrong clock then?); recomputed from now",
                format_time(was),
                hm(spread)
            ));
        }
        if now < entry.activate_at {
            return Ok(Some(format!(
                "rollout: {path} activates on this device at {} (first seen {}, delay {} of the {} spread)",
                format_time(entry.activate_at),
                format_time(entry.first_seen),
                hm(entry.activate_at - entry.first_seen),
                hm(spread)
            )));
        }
    }
    if let Some(w) = fleet.window {
        if !schedule::in_window(w, now) {
            let wait = w.wait(schedule::local_secs_of_day(now));
            return Ok(Some(format!(
                "outside the activation window {w} (local time): {store_path} activates in the window (opens at {})",
                format_time(now + wait)
            )));
        }
    }
    Ok(None)
}

/// `2h05m` / `45m` / `30s`.
fn hm(secs: u64) -> String {
    match (secs / 3600, secs / 60 % 60) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m"),
        (h, m) => format!("{h}h{m:02}m"),
    }
}

/// A deferred apply after its fetch: pin the closure like `fetch` does
/// (STATE_DIR/fetched), record the attempt as "deferred", exit 43.
pub fn stage_deferred(
    machine: &Machine,
    state: &StateDir,
    attempt: &Attempt,
    why: &str,
) -> Result<Exit, Error> {
    let link = machine.state_dir.join("fetched");
    crate::pin::gc_root(machine.root(), &link, &attempt.store_path)?;
    state.record_result(attempt, Exit::Deferred, None, false)?;
    say(&format!(
        "{why}; staged and pinned by {}, nothing activated",
        link.display()
    ));
    Ok(Exit::Deferred)
}

/// After the attempt is recorded: when the new system needs a reboot
/// (exit 100, or its kernel, initrd or modules differ from the booted
/// system's), remember it and reboot if the policy and window allow.
pub fn after_activation(
    machine: &Machine,
    opts: &ApplyOpts,
    fleet: &FleetOpts,
    state: &StateDir,
    attempt: &Pending,
    result: Result<Exit, Error>,
) -> Result<Exit, Error> {
    let exit = result?;
    let counts = opts.kind == ApplyKind::Nixos && opts.action.makes_generation();
    let needed = exit == Exit::RebootNeeded
        || (exit == Exit::Success && counts && kernel_differs(machine, &attempt.store_path));
    if !needed {
        state.update_fleet(|f, _| f.reboot = None)?;
        return Ok(exit);
    }
    let mut need = attempt.clone();
    need.phase = Phase::HealthCheck.as_str().to_string();
    state.update_fleet(|f, _| f.reboot = Some(need.clone()))?;
    if !fleet.reboot_if_needed {
        // activate.rs said so for exit 100; say it for a new kernel.
        if exit == Exit::Success {
            say(&format!(
                "{} has a new kernel, initrd or modules: reboot to take full effect",
                need.store_path
            ));
        }
        return Ok(Exit::RebootNeeded);
    }
    if machine.root.is_some() {
        say(&format!(
            "{} needs a reboot; never rebooting under --root",
            need.store_path
        ));
        return Ok(Exit::RebootNeeded);
    }
    if !window_open(fleet.reboot_window) {
        say(&waiting(&need.store_path, fleet.reboot_window));
        return Ok(Exit::RebootNeeded);
    }
    reboot(state, &need)
}

/// A trial boot is armed (boot/): reboot into it when the policy and the
/// window allow; else it waits, armed, for a later run (or any reboot).
pub fn trial_reboot(
    machine: &Machine,
    fleet: &FleetOpts,
    t: &crate::boot::TrialBoot,
) -> Result<Exit, Error> {
    let path = &t.store_path;
    let doing =
        format!("rebooting for the trial boot of {path}; the next boot confirms it or falls back");
    // Raspberry Pi tryboot: the one-shot flag is the reboot argument
    // (boot/tryboot.rs): systemctl hands it to reboot(2), Raspberry Pi's
    // kernel passes it to the firmware. `--reboot-argument=` (systemd 246
    // on); systemd 253 dropped the positional argument of `reboot`.
    let arg = (t.loader == "tryboot").then_some(crate::boot::tryboot::REBOOT_ARG);
    reboot_for(machine, fleet, path, &doing, arg)
}

/// After a trial boot's health check failed on the new system and the
/// default is back on the previous one: reboot into it when the policy
/// and window allow (Ok(true): the reboot was started).
pub fn reboot_back(machine: &Machine, fleet: &FleetOpts, path: &str) -> Result<bool, Error> {
    let doing = format!("rebooting back from {path} to the previous system");
    Ok(reboot_for(machine, fleet, path, &doing, None)? == Exit::Success)
}

/// `systemctl --no-block [--reboot-argument=ARG] reboot` when `--reboot if-needed`, not
/// under `--root`, inside the window; Success when it was started, else
/// RebootNeeded (said why).
fn reboot_for(
    machine: &Machine,
    fleet: &FleetOpts,
    path: &str,
    doing: &str,
    arg: Option<&str>,
) -> Result<Exit, Error> {
    if !fleet.reboot_if_needed {
        say(&format!(
            "{path} waits for a reboot (a run with --reboot if-needed reboots; so does any reboot)"
        ));
        return Ok(Exit::RebootNeeded);
    }
    if machine.root.is_some() {
        say(&format!(
            "{path} needs a reboot; never rebooting under --root (its trial boot is armed)"
        ));
        return Ok(Exit::RebootNeeded);
    }
    if !window_open(fleet.reboot_window) {
        say(&waiting(path, fleet.reboot_window));
        return Ok(Exit::RebootNeeded);
    }
    let Some(systemctl) = crate::exec::find("systemctl") else {
        say("a reboot is due but systemctl is not on the PATH searched for programs run as root (-v names the entries left out); reboot by hand");
        return Ok(Exit::RebootNeeded);
    };
    let mut args = vec!["--no-block".to_string(), "reboot".to_string()];
    if let Some(a) = arg {
        args.insert(1, format!("--reboot-argument={a}"));
    }
    let shown = match arg {
        Some(a) => format!("--no-block --reboot-argument='{a}' reboot"),
        None => "--no-block reboot".to_string(),
    };
    say(&format!("{doing} ({} {shown})", systemctl.display()));
    let status = crate::exec::command(&systemctl, crate::exec::Env::System)
        .and_then(|mut c| c.args(&args).status());
    match status {
        Ok(s) if s.success() => Ok(Exit::Success),
        other => {
            let why = match other {
                Ok(s) => format!("exited with {s}"),
                Err(e) => e.to_string(),
            };
            say(&format!(
                "{} reboot failed ({why}); a later run tries again",
                systemctl.display()
            ));
            Ok(Exit::RebootNeeded)
        }
    }
}

fn window_open(w: Option<Window>) -> bool {
    w.is_none_or(|w| schedule::in_window(w, schedule::now()))
}

fn waiting(store_path: &str, w: Option<Window>) -> String {
    let w = w.map_or(String::new(), |w| format!(" {w}"));
    format!("{store_path} needs a reboot; a run inside the reboot window{w} (local time) reboots")
}

/// Journal the confirmation, then `systemctl reboot`; when that fails,
/// the need is kept for the next run.
fn reboot(state: &StateDir, need: &Pending) -> Result<Exit, Error> {
    let Some(systemctl) = crate::exec::find("systemctl") else {
        say("a reboot is due but systemctl is not on the PATH searched for programs run as root (-v names the entries left out); reboot by hand");
        return Ok(Exit::RebootNeeded);
    };
    let mut confirm = need.clone();
    confirm.phase = Phase::HealthCheck.as_str().to_string();
    confirm.pid = std::process::id();
    confirm.rebooting = Some(true);
    state.update_fleet(|f, p| {
        f.reboot = None;
        *p = Some(confirm);
    })?;
    say(&format!(
        "rebooting into {} ({} --no-block reboot); the next run confirms it with the health check",
        need.store_path,
        systemctl.display()
    ));
    // --no-block: systemd stops this unit on the way down; waiting for the
    // reboot job from inside it would wait for ourselves.
    let status = crate::exec::command(&systemctl, crate::exec::Env::System)
        .and_then(|mut c| c.args(["--no-block", "reboot"]).status());
    match status {
        Ok(s) if s.success() => Ok(Exit::Success),
        other => {
            let why = match other {
                Ok(s) => format!("exited with {s}"),
                Err(e) => e.to_string(),
            };
            state.update_fleet(|f, p| {
                f.reboot = Some(need.clone());
                *p = None;
            })?;
            say(&format!(
                "{} reboot failed ({why}); a later run tries again",
                systemctl.display()
            ));
            Ok(Exit::RebootNeeded)
        }
    }
}

/// `/run/booted-system` resolved (under `--root`), if it exists.
fn booted_system(machine: &Machine) -> Option<String> {
    crate::boot::booted_system(machine.root())
}

/// As autoUpgrade checks: kernel, initrd or kernel-modules of `new`
/// resolve elsewhere than the booted system's. No booted system: false.
fn kernel_differs(machine: &Machine, new: &str) -> bool {
    crate::boot::kernel_differs_at(machine.root(), new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn resolve_follows_links_under_root() {
        let t = crate::testutil::TempDir::new("fleet-resolve");
        let r = t.path();
        std::fs::create_dir_all(r.join("nix/store/k")).unwrap();
        std::fs::write(r.join("nix/store/k/bzImage"), "k").unwrap();
        std::fs::create_dir_all(r.join("nix/store/s")).unwrap();
        std::os::unix::fs::symlink("/nix/store/k/bzImage", r.join("nix/store/s/kernel")).unwrap();
        std::fs::create_dir_all(r.join("run")).unwrap();
        std::os::unix::fs::symlink("/nix/store/s", r.join("run/booted-system")).unwrap();
        let booted = crate::boot::resolve(Some(r), Path::new("/run/booted-system")).unwrap();
        assert_eq!(booted, Path::new("/nix/store/s"));
        assert_eq!(
            crate::boot::resolve(Some(r), &booted.join("kernel")).unwrap(),
            Path::new("/nix/store/k/bzImage")
        );
        assert_eq!(
            crate::boot::resolve(Some(r), Path::new("/nix/store/s/initrd")),
            None
        );
        assert_eq!(hm(7500), "2h05m");
        assert_eq!(hm(2700), "45m");
    }
}

//! Recovery: finish or undo an attempt a kill interrupted (the journal in
//! state.json's `pending`; docs/journal.md). `fh-lite apply` and
//! `fh-lite rollback` run it first, under the lock, before anything else;
//! `fh-lite recover` runs it on its own.
//!
//! We hold the lock, so the process that wrote the entry is gone. By the
//! phase it reached (journal.rs, [`decide`]):
//!
//! - `fetching`: nothing irreversible happened. The entry is cleared, the
//!   attempt recorded as "interrupted", and the command goes on (an apply
//!   starts over; the paths already in the store are kept).
//! - `profile`, `activating`, `health-check`, `committing`: the attempt is
//!   redone from its activation, the way it was started (same action,
//!   trial, health check, timeouts; the system it replaced from the
//!   journal). switch-to-configuration is made to be run again on the
//!   system it already activated, and the generation is reused, so this is
//!   safe wherever the kill landed; only a whole activation followed by a
//!   passing health check makes it a success. A failure rolls back to the
//!   system that ran before, as in any apply.
//! - `rolling-back`: the rollback is done again (it is idempotent) and the
//!   path recorded as failed.
//!
//! Recovery journals its own phases, so a kill during recovery is
//! recovered by the next run in the same way.
//!
//! The journal is not trusted input (under `--root` it lies in an image
//! fh-lite did not make). Before anything is redone ([`vouch`]): the store
//! path, and the system a rollback returns to, must be registered and valid
//! in this store; the generations the entry names must be that path in the
//! profile; and recovery never runs what the operator's own command would
//! not ([`Allowed`]): no activation when the command activates nothing
//! (`boot` under `--root`), no health check other than the command's own
//! `--health-check`. Anything else is refused, named, and cleared.
//!
//! Then, before anything is redone, a script the dead run left running (fh-lite alone
//! was killed; the script has a process group of its own) is waited for,
//! up to the attempt's `--activation-timeout`, then killed with its group
//! (activate/orphan.rs): recovery never runs a second activation beside it.

use crate::activate::{self, Before, Report, Settings};
use crate::error::{Error, Exit};
use crate::journal::{decide, vouch, Allowed, AttemptJournal, Decision};
use crate::machine::Machine;
use crate::nix::store_path::StorePath;
use crate::options::Common;
use crate::state::{Attempt, Pending, Phase, StateDir, ROLLBACK_ACTION};
use crate::ui::say;

/// `fh-lite recover`: recover, or say there is nothing to recover.
pub fn run(common: &Common) -> Result<Exit, Error> {
    let state = common.machine().state();
    let _lock = state.lock()?;
    crate::signal::install()?;
    // A trial boot: settled as at boot (confirm-boot).
    let fleet = crate::options::FleetOpts::default();
    match crate::cmd::confirm_boot::settle(common, &fleet, &state)? {
        None => {}
        Some(crate::cmd::confirm_boot::Settled::Failed(e, _)) => return Err(e),
        Some(crate::cmd::confirm_boot::Settled::Wait(t)) => {
            say(&format!(
                "the trial boot of {} waits for its reboot; nothing to recover",
                t.store_path
            ));
            return Ok(Exit::RebootNeeded);
        }
        Some(_) => return Ok(Exit::Success),
    }
    match recover(
        common,
        &state,
        &Allowed::of_command(common.store(crate::options::StoreKind::Auto, None)),
    )? {
        Recovery::Nothing => {
            say("no interrupted attempt; nothing to recover");
            Ok(Exit::Success)
        }
        Recovery::Cleared => Ok(Exit::Success),
        Recovery::Finished(result) => result,
    }
}

/// What recovery did.
pub enum Recovery {
    /// No pending attempt.
    Nothing,
    /// It was still fetching: cleared and recorded as "interrupted".
    Cleared,
    /// It was redone or rolled back; how that ended (already recorded).
    Finished(Result<Exit, Error>),
}

/// Refuse the journal entry: say why, record the attempt as interrupted,
/// clear it.
fn refuse(
    common: &Common,
    state: &StateDir,
    attempt: &Attempt,
    what: &str,
    why: &str,
) -> Result<Recovery, Error> {
    if !common.quiet {
        eprintln!(
            "fh-lite: warning: refusing the interrupted attempt in {} ({what}): {why}; nothing of it is redone, and it is cleared",
            state.file().display()
        );
    }
    state.record_result(attempt, Exit::Interrupted, None, false)?;
    Ok(Recovery::Cleared)
}

/// Recover the pending attempt, if any, running no more than `allowed`;
/// the caller holds the lock.
pub fn recover(common: &Common, state: &StateDir, allowed: &Allowed) -> Result<Recovery, Error> {
    let machine = common.machine();
    let Some(p) = state.pending()? else {
        return Ok(Recovery::Nothing);
    };
    let phase = p.phase();
    let path = StorePath::parse(&p.store_path).map_err(|e| {
        Error::new(
            Exit::Internal,
            format!(
                "state file {}: the pending attempt's store path: {e}; delete its \"pending\" entry",
                state.file().display()
            ),
        )
    })?;
    let attempt = Attempt::resumed(&p.reference, &path, p.time);
    let what = format!("{path}, {}, killed during {}", p.action, phase.as_str());
    if p.action == ROLLBACK_ACTION {
        if let Err(why) = vouch(&machine, &p, &path, None, allowed) {
            return refuse(common, state, &attempt, &what, &why);
        }
        // A script the dead run started may still run: never a second
        // beside it (only for an entry this store vouches for).
        activate::orphan::settle(&p)?;
        return redo_rollback_command(common, state, &p, &attempt).map(Recovery::Finished);
    }
    let settings = Settings::of_pending(&p).ok_or_else(|| {
        Error::new(
            Exit::Internal,
            format!(
                "state file {}: the pending attempt for {path} has an unknown kind '{}' or action '{}'; delete its \"pending\" entry",
                state.file().display(),
                p.kind,
                p.action
            ),
        )
    })?;
    let decision = decide(phase);
    if decision == Decision::Clear {
        say(
            &format!("an attempt at {path} was interrupted while fetching; nothing had changed, starting over"),
        );
        state.record_result(&attempt, Exit::Interrupted, None, false)?;
        return Ok(Recovery::Cleared);
    }
    if let Err(why) = vouch(&machine, &p, &path, Some(&settings), allowed) {
        return refuse(common, state, &attempt, &what, &why);
    }
    // A script the dead run started may still run: never a second beside it.
    activate::orphan::settle(&p)?;
    say(&if p.rebooting == Some(true) {
        format!(
            "confirming the reboot into {path} ({}): activation again, then the health check",
            p.action
        )
    } else {
        format!(
            "recovering an interrupted attempt: {path} ({}, killed during {})",
            p.action,
            phase.as_str()
        )
    });
    let redo = Redo {
        machine: &machine,
        state,
        settings: &settings,
        path: &path,
        attempt: &attempt,
    };
    redo.run(p, decision).map(Recovery::Finished)
}

/// An interrupted attempt this store vouches for, to be redone.
struct Redo<'a> {
    machine: &'a Machine,
    state: &'a StateDir,
    settings: &'a Settings,
    path: &'a StorePath,
    attempt: &'a Attempt,
}

impl Redo<'_> {
    /// Activate again (or only roll back, as `decision` says) from the
    /// journal entry `p`, and record how that ended.
    fn run(&self, p: Pending, decision: Decision) -> Result<Result<Exit, Error>, Error> {
        let (machine, settings, path, state) = (self.machine, self.settings, self.path, self.state);
        let before = Before {
            generation: p.previous_generation,
            system: p.previous_system.clone(),
        };
        let committed = p.generation.is_some();
        let mut journal = AttemptJournal::new(state, p);
        let mut report = Report::default();
        let result = match decision {
            Decision::RollBack => Err(activate::redo_rollback(
                machine,
                settings,
                path,
                &before,
                committed,
                &mut journal,
                &mut report,
            )),
            _ => activate::activate(machine, settings, path, &before, &mut journal, &mut report),
        };
        let exit = result.as_ref().map_or_else(|e| e.exit, |x| *x);
        let generation = report.generation.or(journal.pending.generation);
        state.record_result(self.attempt, exit, generation, report.path_failed)?;
        if exit == Exit::RebootNeeded {
            remember_reboot(state, &journal.pending)?;
        }
        Ok(result)
    }
}

/// As after an apply (fleet/mod.rs): the reboot need of `pending` is
/// remembered, `status` shows it and `--reboot if-needed` acts on it.
fn remember_reboot(state: &StateDir, pending: &Pending) -> Result<(), Error> {
    let mut need = pending.clone();
    need.phase = Phase::HealthCheck.as_str().to_string();
    need.running = None;
    need.rebooting = None;
    state.update_fleet(|f, _| f.reboot = Some(need))
}

/// A `fh-lite rollback` killed before its switch script finished: switch
/// to the same generation again (switching the profile and running the
/// script again is safe, as for an apply). The entry stays until this
/// ends, so a kill now is recovered the same way by the next run.
fn redo_rollback_command(
    common: &Common,
    state: &StateDir,
    p: &Pending,
    attempt: &Attempt,
) -> Result<Result<Exit, Error>, Error> {
    let Some(n) = p.generation else {
        return Err(Error::new(
            Exit::Internal,
            format!(
                "state file {}: the pending rollback names no generation; delete its \"pending\" entry",
                state.file().display()
            ),
        ));
    };
    say(&format!(
        "recovering an interrupted rollback to generation {n} ({})",
        p.store_path
    ));
    let mut report = Report::default();
    let result = activate::switch_back::SwitchBack::prepare(&common.machine(), Some(n), &[])
        .and_then(|back| back.run(&mut report));
    let exit = result.as_ref().map_or_else(|e| e.exit, |x| *x);
    state.record_result(attempt, exit, report.generation, false)?;
    Ok(result)
}

/// Run recovery before a command (apply, rollback): its outcome is printed,
/// and the command goes on. Some(result): a signal arrived meanwhile, so the
/// command stops with recovery's result.
pub fn before_command(
    common: &Common,
    state: &StateDir,
    allowed: &Allowed,
) -> Result<Option<Result<Exit, Error>>, Error> {
    let result = match recover(common, state, allowed)? {
        Recovery::Finished(r) => r,
        Recovery::Nothing | Recovery::Cleared => return Ok(None),
    };
    if crate::signal::interrupted() {
        return Ok(Some(result));
    }
    if let Err(e) = &result {
        crate::ui::error(&format!("recovery: {}", e.message));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activate::profiles::Profile;
    use crate::testutil::{chroot_root, common, fake_system, log as activation_log, TempDir};

    const STC: &str = "bin/switch-to-configuration";

    /// What `fh-lite recover` allows.
    fn allowed(c: &Common) -> Allowed {
        Allowed::of_command(c.store(crate::options::StoreKind::Auto, None))
    }

    /// A journal entry for `path` (switch, slow-v1-like `a` ran before).
    fn entry(path: &str, phase: Phase, before: &str) -> Pending {
        Pending {
            reference: "org/proj/=0.1.2#x".into(),
            store_path: path.into(),
            action: "switch".into(),
            phase: phase.as_str().into(),
            previous_generation: Some(1),
            previous_system: Some(before.into()),
            time: 1,
            pid: 999_999,
            kind: "nixos".into(),
            rollback_on: vec![1, 2, 4],
            health_timeout: 60,
            ..Pending::default()
        }
    }

    #[test]
    fn nothing_pending_is_nothing_to_do_and_fetching_is_cleared() {
        let t = TempDir::new("recover-fetching");
        let c = common(t.path());
        let state = StateDir::new(&c.state_dir);
        assert!(matches!(
            recover(&c, &state, &allowed(&c)).unwrap(),
            Recovery::Nothing
        ));
        let p = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a";
        let a = Attempt::start("r", &StorePath::parse(p).unwrap());
        state.begin(&a, &entry(p, Phase::Fetching, p)).unwrap();
        assert!(matches!(
            recover(&c, &state, &allowed(&c)).unwrap(),
            Recovery::Cleared
        ));
        let s = state.load().unwrap();
        assert_eq!(s.pending, None);
        assert_eq!(s.last_attempt.unwrap().result, "interrupted");
    }

    /// A chroot root (None: not root) with two systems whose switch
    /// scripts log and exit 0, and its state directory.
    fn two_systems(t: &TempDir) -> Option<(std::path::PathBuf, Common, StateDir, String, String)> {
        let root = chroot_root(t)?;
        let c = common(&root);
        let state = StateDir::new(&c.state_dir);
        let a = fake_system(&root, "sys-a", STC, 0);
        let b = fake_system(&root, "sys-b", STC, 0);
        Some((root, c, state, a, b))
    }

    /// Journal entries this store does not vouch for are refused and
    /// cleared, nothing run: an unregistered path, a generation that is
    /// another path, a health check that is not the command's own.
    #[test]
    fn untrusted_journal_entries_are_refused_and_cleared() {
        let t = TempDir::new("recover-untrusted");
        let Some((root, c, state, a, b)) = two_systems(&t) else {
            return;
        };
        let profile = Profile::new(&c.profile, Some(&root));
        profile.create_generation(&a).unwrap();
        profile.switch_to(1).unwrap();
        let stray = "/nix/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-stray";
        std::fs::create_dir_all(root.join(&stray[1..]).join("bin")).unwrap();
        let mut wrong_gen = entry(&b, Phase::Activating, &a);
        wrong_gen.generation = Some(1);
        let mut checked = entry(&b, Phase::HealthCheck, &a);
        checked.health_check = Some("touch /pwned".into());
        let cases = [
            (
                entry(stray, Phase::Activating, &a),
                "is not registered and valid",
            ),
            (
                entry(&b, Phase::Activating, stray),
                "is not registered and valid",
            ),
            (wrong_gen, "generation 1 of the profile"),
            (checked, "not this command's --health-check"),
        ];
        for (p, why) in cases {
            let path = StorePath::parse(&p.store_path).unwrap();
            let att = Attempt::start("r", &path);
            state.begin(&att, &p).unwrap();
            let allowed = allowed(&c);
            assert!(matches!(
                recover(&c, &state, &allowed).unwrap(),
                Recovery::Cleared
            ));
            let err = vouch(
                &c.machine(),
                &p,
                &path,
                Settings::of_pending(&p).as_ref(),
                &allowed,
            );
            assert!(err.unwrap_err().contains(why), "{why}");
            let s = state.load().unwrap();
            assert_eq!(s.pending, None);
            assert_eq!(s.last_attempt.unwrap().result, "interrupted");
            assert!(!root.join("activation.log").exists());
            assert!(!root.join("pwned").exists());
            assert_eq!(profile.current().unwrap(), Some(1));
        }
    }

    #[test]
    fn a_recovery_whose_activation_exits_100_records_the_reboot_need() {
        let t = TempDir::new("recover-reboot");
        let Some(root) = chroot_root(&t) else {
            return;
        };
        let c = common(&root);
        let state = StateDir::new(&c.state_dir);
        let a = fake_system(&root, "sys-a", STC, 0);
        let b = fake_system(&root, "sys-b", STC, 100);
        let profile = Profile::new(&c.profile, Some(&root));
        profile.create_generation(&a).unwrap();
        profile.switch_to(1).unwrap();
        profile.create_generation(&b).unwrap();
        profile.switch_to(2).unwrap();
        let att = Attempt::start("r", &StorePath::parse(&b).unwrap());
        state
            .begin(&att, &entry(&b, Phase::Activating, &a))
            .unwrap();
        let Recovery::Finished(r) = recover(&c, &state, &allowed(&c)).unwrap() else {
            panic!("not recovered")
        };
        assert_eq!(r.unwrap(), Exit::RebootNeeded);
        let s = state.load().unwrap();
        assert_eq!(s.pending, None);
        let need = s.fleet.and_then(|f| f.reboot).expect("the reboot need");
        assert_eq!(need.store_path, b);
    }

    #[test]
    fn an_attempt_killed_mid_activation_is_redone_or_rolled_back() {
        let t = TempDir::new("recover-resume");
        let Some((root, c, state, a, b)) = two_systems(&t) else {
            return;
        };
        let profile = Profile::new(&c.profile, Some(&root));
        profile.create_generation(&a).unwrap();
        profile.switch_to(1).unwrap();
        // Killed during b's activation: generation 2 exists and is current.
        profile.create_generation(&b).unwrap();
        profile.switch_to(2).unwrap();
        let att = Attempt::start("r", &StorePath::parse(&b).unwrap());
        state
            .begin(&att, &entry(&b, Phase::Activating, &a))
            .unwrap();
        let Recovery::Finished(r) = recover(&c, &state, &allowed(&c)).unwrap() else {
            panic!("not recovered")
        };
        assert_eq!(r.unwrap(), Exit::Success);
        let s = state.load().unwrap();
        assert_eq!(s.pending, None);
        let last = s.last_success.unwrap();
        assert_eq!(
            (last.store_path.as_str(), last.generation),
            (b.as_str(), Some(2))
        );
        assert_eq!(
            profile.current().unwrap(),
            Some(2),
            "the generation is reused"
        );
        assert_eq!(
            activation_log(&root),
            format!("/nix/var/nix/profiles/system-2-link/{STC} switch bootloader=\n")
        );
        // Killed while rolling back: the rollback is redone, b is failed.
        std::fs::remove_file(root.join("activation.log")).unwrap();
        state
            .begin(&att, &entry(&b, Phase::RollingBack, &a))
            .unwrap();
        let Recovery::Finished(r) = recover(&c, &state, &allowed(&c)).unwrap() else {
            panic!("not recovered")
        };
        assert_eq!(r.unwrap_err().exit, Exit::RolledBack);
        let s = state.load().unwrap();
        assert_eq!(s.pending, None);
        assert_eq!(s.failed[0].store_path, b);
        assert_eq!(profile.current().unwrap(), Some(1));
        assert_eq!(
            activation_log(&root),
            format!("/nix/var/nix/profiles/system-1-link/{STC} switch bootloader=\n")
        );
    }

    /// The `profile` phase lasts a few milliseconds, too short for the
    /// random kills of tests/blackbox/crash.rs to land in reliably; so
    /// every state a kill can leave there is made here, one at a time, and
    /// recovered: the generation link half made (its temporary name), made
    /// but the profile not switched, the profile's own temporary link made
    /// but not renamed, and the profile switched.
    #[test]
    fn an_apply_killed_anywhere_in_the_profile_phase_is_finished() {
        // (what, links made in the profiles directory, current generation)
        type State<'a> = (&'a str, &'a [(&'a str, &'a str)], u64);
        let states: [State; 5] = [
            ("nothing done yet", &[], 1),
            (
                "generation link under its temporary name",
                &[("system-2-link.tmp-999999-0", "B")],
                1,
            ),
            (
                "generation made, profile not switched",
                &[("system-2-link", "B")],
                1,
            ),
            (
                "profile's temporary link made, not renamed",
                &[("system-2-link", "B"), (".0_system", "system-2-link")],
                1,
            ),
            ("profile switched", &[("system-2-link", "B")], 2),
        ];
        for (what, links, current) in states {
            let t = TempDir::new("recover-profile");
            let Some((root, c, state, a, b)) = two_systems(&t) else {
                return;
            };
            let profile = Profile::new(&c.profile, Some(&root));
            profile.create_generation(&a).unwrap();
            profile.switch_to(1).unwrap();
            let dir = c.profile.parent().unwrap().to_path_buf();
            for (name, target) in links {
                let target = if *target == "B" { b.as_str() } else { target };
                std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
            }
            if current == 2 {
                profile.switch_to(2).unwrap();
            }
            let att = Attempt::start("r", &StorePath::parse(&b).unwrap());
            state.begin(&att, &entry(&b, Phase::Profile, &a)).unwrap();
            let Recovery::Finished(r) = recover(&c, &state, &allowed(&c)).unwrap() else {
                panic!("{what}: not recovered")
            };
            assert_eq!(r.unwrap(), Exit::Success, "{what}");
            assert_eq!(profile.current().unwrap(), Some(2), "{what}");
            let gens: Vec<(u64, String)> = profile
                .generations()
                .unwrap()
                .into_iter()
                .map(|g| (g.number, g.target))
                .collect();
            assert_eq!(
                gens,
                [(1, a.clone()), (2, b.clone())],
                "{what}: one generation for b"
            );
            assert_eq!(
                activation_log(&root),
                format!("/nix/var/nix/profiles/system-2-link/{STC} switch bootloader=\n"),
                "{what}: b's script ran, to its end"
            );
            let s = state.load().unwrap();
            assert_eq!(s.pending, None, "{what}");
            assert_eq!(
                s.last_success.map(|l| (l.store_path, l.generation)),
                Some((b.clone(), Some(2))),
                "{what}"
            );
            let mut left: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".tmp-"))
                .collect();
            left.sort();
            assert_eq!(
                left,
                Vec::<String>::new(),
                "{what}: the dead run's temporary generation link is gone"
            );
        }
    }

    #[test]
    fn a_rollback_killed_before_its_script_finished_is_switched_again() {
        let t = TempDir::new("recover-rollback");
        let Some((root, c, state, a, b)) = two_systems(&t) else {
            return;
        };
        let profile = Profile::new(&c.profile, Some(&root));
        profile.create_generation(&a).unwrap();
        profile.create_generation(&b).unwrap();
        // `fh-lite rollback` from 2 to 1, killed after the profile moved
        // and before a's script finished (its journal entry, as written).
        profile.switch_to(1).unwrap();
        let m = c.machine();
        let back = crate::activate::switch_back::SwitchBack::prepare(&m, Some(1), &[]).unwrap();
        let entry = back.journal_entry("rollback to generation 1");
        assert_eq!(entry.action, ROLLBACK_ACTION);
        assert_eq!(entry.generation, Some(1));
        let att = Attempt::start(&entry.reference, &StorePath::parse(&a).unwrap());
        state.begin(&att, &entry).unwrap();
        let Recovery::Finished(r) = recover(&c, &state, &allowed(&c)).unwrap() else {
            panic!("not recovered")
        };
        assert_eq!(r.unwrap(), Exit::Success);
        assert_eq!(profile.current().unwrap(), Some(1));
        assert_eq!(
            activation_log(&root),
            format!("/nix/var/nix/profiles/system-1-link/{STC} switch bootloader=\n"),
            "a's switch script ran again, to its end"
        );
        let s = state.load().unwrap();
        assert_eq!(s.pending, None);
        let last = s.last_success.unwrap();
        assert_eq!(
            (last.store_path.as_str(), last.generation),
            (a.as_str(), Some(1))
        );
        assert!(s.failed.is_empty(), "a rollback marks nothing failed");
        // Killed before the profile moved: the same.
        std::fs::remove_file(root.join("activation.log")).unwrap();
        profile.switch_to(2).unwrap();
        state.begin(&att, &entry).unwrap();
        assert!(matches!(
            recover(&c, &state, &allowed(&c)).unwrap(),
            Recovery::Finished(Ok(Exit::Success))
        ));
        assert_eq!(profile.current().unwrap(), Some(1));
        assert_eq!(
            activation_log(&root),
            format!("/nix/var/nix/profiles/system-1-link/{STC} switch bootloader=\n")
        );
    }
}

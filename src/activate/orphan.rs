//! Scripts that outlive the fh-lite that started them.
//!
//! Activation and rollback scripts run in process groups of their own
//! ([`super::Ctx::run`]), so a terminal's Ctrl-C reaches fh-lite only. When
//! fh-lite alone dies (the OOM killer, `kill -9`, a runner that kills its
//! child only) its `switch-to-configuration` lives on. The next run's
//! recovery must not start a second one beside it: two activations of the
//! same system at once can corrupt `/etc` and unit state.
//!
//! So while a script runs, the journal entry holds it ([`Running`]: its
//! process group, its start time from /proc, when it started), written
//! after the spawn and cleared when it ends. Recovery first [`settle`]s:
//! if that group still has a process started no earlier than the script,
//! it waits for the group to end, up to what is left of the attempt's
//! `--activation-timeout` (no limit without one), then kills the group;
//! then it redoes what the phase says. It says which it did.

use std::path::Path;
use std::time::Duration;

use super::Ctx;
use crate::error::{Error, Exit};
use crate::state::{Pending, Running};
use crate::util::unix_now;

use crate::util::proc_stat as stat;

/// Record that `pid` (leading its own process group) runs `program` for
/// the pending attempt. A failure to write is a warning: the script runs
/// already, and only a later recovery would miss it.
pub(crate) fn started(ctx: &Ctx, program: &Path, args: &[&str], pid: u32) {
    let Some((_, _, start_ticks)) = stat(pid) else {
        // Gone already: nothing can be left running.
        return;
    };
    let running = Running {
        program: format!("{} {}", program.display(), args.join(" "))
            .trim_end()
            .to_string(),
        pgid: pid,
        start_ticks,
        since: unix_now(),
        boot_id: crate::util::boot_id(),
    };
    if let Err(e) = ctx.state.set_running(Some(running)) {
        crate::ui::warn(&e.message);
    }
}

/// The script recorded by [`started`] has ended.
pub(crate) fn finished(ctx: &Ctx) {
    if let Err(e) = ctx.state.set_running(None) {
        crate::ui::warn(&e.message);
    }
}

/// Whether the script's process group lives on (a member not a zombie).
/// Its id alone says little: a dead run's pid may belong to another
/// process by now, on this boot or the next (a device boots the same way
/// each time, with the same pids).
/// - Recorded on another boot: everything it ran has ended.
/// - A process with the leader's pid but another start time: that pid was
///   free, so no member of the recorded group is left (Linux gives out no
///   id still in use as a process group).
/// - Otherwise a member of the group, started no earlier than its leader.
fn alive(r: &Running) -> bool {
    if let (Some(then), Some(now)) = (&r.boot_id, crate::util::boot_id()) {
        if *then != now {
            return false;
        }
    }
    match stat(r.pgid) {
        Some((_, _, start)) if start != r.start_ticks => return false,
        Some((state, _, _)) if state != 'Z' => return true,
        _ => {}
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let pid = e.file_name().to_string_lossy().parse::<u32>().ok();
        matches!(pid.and_then(stat),
            Some((state, pgid, start)) if pgid == r.pgid && state != 'Z' && start >= r.start_ticks)
    })
}

/// How often a wait looks at the orphan.
const POLL: Duration = Duration::from_millis(100);

/// Before recovery redoes `p`: wait for the script it left running, up to
/// what is left of its activation timeout, then kill its group. Err only
/// when a SIGTERM or SIGINT arrives during the wait (nothing redone).
pub fn settle(p: &Pending) -> Result<(), Error> {
    let Some(r) = &p.running else {
        return Ok(());
    };
    if !alive(r) {
        return Ok(());
    }
    let limit = p.activation_timeout.map(|t| r.since.saturating_add(t));
    let say = crate::ui::say;
    let how_long = match limit {
        Some(end) => format!(
            "up to {} s more (--activation-timeout)",
            end.saturating_sub(unix_now())
        ),
        None => "with no time limit (no --activation-timeout)".to_string(),
    };
    say(&format!(
        "the interrupted run's '{}' (process group {}) is still running; waiting for it to finish, {how_long}, before recovering",
        r.program, r.pgid
    ));
    loop {
        if !alive(r) {
            say(&format!(
                "'{}' (process group {}) finished; recovering",
                r.program, r.pgid
            ));
            return Ok(());
        }
        if crate::signal::interrupted() {
            return Err(Error::new(
                Exit::Interrupted,
                format!(
                    "{}; '{}' (process group {}) still runs, nothing was redone",
                    Exit::Interrupted.meaning(),
                    r.program,
                    r.pgid
                ),
            ));
        }
        if limit.is_some_and(|end| unix_now() >= end) {
            kill(r);
            say(&format!(
                "'{}' (process group {}) did not finish within --activation-timeout; killed its process group; recovering",
                r.program, r.pgid
            ));
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

/// SIGKILL `r`'s process group and wait (briefly) until it is gone.
fn kill(r: &Running) {
    let pgid = i32::try_from(r.pgid)
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pgid) = pgid {
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    }
    for _ in 0..50 {
        if !alive(r) {
            return;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    fn running(child: &std::process::Child, since: u64) -> Running {
        let pid = child.id();
        Running {
            program: "sleep".into(),
            pgid: pid,
            start_ticks: stat(pid).unwrap().2,
            since,
            boot_id: crate::util::boot_id(),
        }
    }

    #[test]
    fn a_live_group_is_seen_and_a_reused_id_is_not() {
        let mut child = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let r = running(&child, unix_now());
        assert!(alive(&r));
        // The same id, but the process recorded started later than this one.
        let later = Running {
            start_ticks: r.start_ticks + 1_000_000,
            ..r.clone()
        };
        assert!(!alive(&later));
        let _ = child.kill();
        let _ = child.wait();
        assert!(!alive(&r));
    }

    #[test]
    fn a_dead_scripts_pid_now_held_by_another_process_is_neither_awaited_nor_killed() {
        // A live group whose leader has the recorded pid but started after
        // the recorded script: the script died and its pid was reused.
        let mut other = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let mut r = running(&other, unix_now() - 100);
        r.start_ticks -= 1;
        let p = Pending {
            running: Some(r.clone()),
            activation_timeout: Some(1),
            ..Pending::default()
        };
        let start = std::time::Instant::now();
        settle(&p).unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "waited for an unrelated process"
        );
        assert!(
            other.try_wait().unwrap().is_none(),
            "killed an unrelated process group that got the dead script's pid"
        );
        // The very process, but recorded on another boot.
        let mut r = running(&other, unix_now() - 100);
        assert!(alive(&r));
        r.boot_id = Some("00000000-0000-0000-0000-000000000000".into());
        if crate::util::boot_id().is_some() {
            assert!(!alive(&r), "a script of another boot was taken for alive");
        }
        let _ = other.kill();
        let _ = other.wait();
    }

    #[test]
    fn settle_kills_an_orphan_past_its_timeout_and_waits_for_one_within() {
        // Past its limit (started 100 s ago, 10 s allowed): killed at once.
        let mut child = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let p = Pending {
            running: Some(running(&child, unix_now() - 100)),
            activation_timeout: Some(10),
            ..Pending::default()
        };
        let start = std::time::Instant::now();
        settle(&p).unwrap();
        assert!(start.elapsed() < Duration::from_secs(10));
        let st = child.wait().unwrap();
        assert_eq!(st.code(), None, "the orphan past its limit was not killed");
        // Within its limit: waited for until it ends on its own.
        let mut child = Command::new("sleep")
            .arg("1")
            .process_group(0)
            .spawn()
            .unwrap();
        let p = Pending {
            running: Some(running(&child, unix_now())),
            activation_timeout: Some(60),
            ..Pending::default()
        };
        // Reaped by a thread, as init would reap an orphan.
        let pid = child.id();
        let reaper = std::thread::spawn(move || child.wait().unwrap());
        let start = std::time::Instant::now();
        settle(&p).unwrap();
        let waited = start.elapsed();
        assert!(reaper.join().unwrap().success(), "sleep 1 was killed");
        assert!(
            waited >= Duration::from_millis(500),
            "did not wait for pid {pid}: {waited:?}"
        );
    }
}

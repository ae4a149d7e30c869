//! A time limit for every run of fh-lite: a hang fails the test that
//! started it, within minutes, instead of hanging the suite.
//!
//! Every fh-lite the tests start goes through [`spawn`] (and [`output`],
//! which uses it): the child runs in a process group of its own and is
//! registered here with the test's name (libtest names each test's thread)
//! and a deadline, [`limit`] from now. One watcher thread looks every
//! second: a registered fh-lite still running past its deadline is stopped
//! and killed with its whole tree (its group, every descendant and their
//! groups: activation scripts and health checks run in groups of their
//! own), the test's name goes to stderr, and [`output`] panics in the test.
//!
//! `FH_LITE_TEST_LIMIT` (seconds) sets the limit; 300 by default, longer
//! than any single run of the suite takes under qemu-user.

use std::collections::BTreeSet;
use std::fs;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::support::procs::{processes, Proc};

/// One registered run.
struct Entry {
    pid: u32,
    /// Field 22 of /proc/PID/stat: tells this process from a later one
    /// that got the same pid.
    start: u64,
    deadline: Instant,
    test: String,
}

static RUNS: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
/// Pids (with their start times) the watcher killed.
static KILLED: Mutex<BTreeSet<(u32, u64)>> = Mutex::new(BTreeSet::new());
static WATCHER: OnceLock<()> = OnceLock::new();

/// The limit for one run of fh-lite (`FH_LITE_TEST_LIMIT` seconds, or 300).
pub fn limit() -> Duration {
    let secs = std::env::var("FH_LITE_TEST_LIMIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    Duration::from_secs(secs)
}

/// `(state, ppid, pgid, start time)` of `pid`, from /proc.
fn stat(pid: u32) -> Option<(char, u32, u32, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid pgrp …; comm may hold spaces and parens.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((
        f.first()?.chars().next()?,
        f.get(1)?.parse().ok()?,
        f.get(2)?.parse().ok()?,
        f.get(19)?.parse().ok()?,
    ))
}

fn signal(sig: &str, target: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Stop, then kill, `root`'s group and every process below it, with the
/// groups they lead.
fn kill_tree(root: u32) {
    signal("STOP", &format!("-{root}"));
    let mut found = vec![root];
    let mut groups = BTreeSet::from([root]);
    // Twice: what was forking during the first walk is stopped by then.
    for _ in 0..2 {
        let all = processes();
        let mut i = 0;
        while i < found.len() {
            let p = found[i];
            for &Proc { pid, ppid, pgid } in &all {
                if (ppid == p || groups.contains(&pgid)) && !found.contains(&pid) {
                    found.push(pid);
                    if pgid == pid {
                        groups.insert(pgid);
                    }
                    signal("STOP", &pid.to_string());
                }
            }
            i += 1;
        }
    }
    for g in &groups {
        signal("KILL", &format!("-{g}"));
    }
    for p in &found {
        signal("KILL", &p.to_string());
    }
}

fn watch() {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = Instant::now();
        let mut runs = RUNS.lock().unwrap_or_else(|e| e.into_inner());
        runs.retain(|e| {
            match stat(e.pid) {
                // Gone, exited (a zombie not yet reaped) or another process.
                None => false,
                Some(('Z', ..)) => false,
                Some((.., start)) if start != e.start => false,
                Some(_) if now < e.deadline => true,
                Some(_) => {
                    eprintln!(
                        "\nblack-box watchdog: test {}: fh-lite (pid {}) ran over its time limit \
                         (FH_LITE_TEST_LIMIT, {} s by default); killed it and every process it \
                         started\n",
                        e.test,
                        e.pid,
                        limit().as_secs()
                    );
                    KILLED
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert((e.pid, e.start));
                    kill_tree(e.pid);
                    false
                }
            }
        });
    }
}

/// Spawn `cmd` (an fh-lite command) in a process group of its own, under
/// the time limit.
pub fn spawn(cmd: Command) -> Child {
    spawn_start(cmd, limit()).0
}

/// [`spawn`] with the limit `within`; also returns the child's start time.
fn spawn_start(mut cmd: Command, within: Duration) -> (Child, u64) {
    use std::os::unix::process::CommandExt;
    WATCHER.get_or_init(|| {
        std::thread::Builder::new()
            .name("black-box watchdog".into())
            .spawn(watch)
            .expect("start the black-box watchdog");
    });
    cmd.process_group(0);
    let child = cmd
        .spawn()
        .expect("spawn fh-lite (is FH_LITE_RUNNER installed?)");
    let start = stat(child.id()).map_or(0, |s| s.3);
    let test = std::thread::current()
        .name()
        .unwrap_or("(unnamed)")
        .to_string();
    RUNS.lock().unwrap_or_else(|e| e.into_inner()).push(Entry {
        pid: child.id(),
        start,
        deadline: Instant::now() + within,
        test,
    });
    (child, start)
}

/// Whether the watcher killed `child` (whose pid had start time `start`).
fn was_killed(pid: u32, start: u64) -> bool {
    KILLED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&(pid, start))
}

/// Run `cmd` to its end under the time limit; panics (failing the test)
/// if the watcher had to kill it.
pub fn output(cmd: Command) -> Output {
    output_within(cmd, limit())
}

/// [`output`] with the limit `within`; stdout and stderr are captured, as
/// by `Command::output`.
fn output_within(mut cmd: Command, within: Duration) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let (child, start) = spawn_start(cmd, within);
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for fh-lite");
    assert!(
        !was_killed(pid, start),
        "fh-lite did not finish within {} s (FH_LITE_TEST_LIMIT) and was killed with \
         every process it started; its stderr so far:\n{}",
        within.as_secs(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The watchdog itself: a run that hangs, with a grandchild in a group of
/// its own (as an activation script), fails its test in time and leaves
/// no process behind.
#[test]
fn watchdog_kills_a_hung_run_and_everything_it_started() {
    let tag = format!("fh-lite-watchdog-{}", std::process::id());
    let mut cmd = Command::new("sh");
    // `setsid` puts the grandchild in a session and group of its own.
    cmd.args(["-c", "setsid sleep 600 & sleep 600 & wait"]);
    // Inherited by every process of the run: how the leftovers are found.
    cmd.env("FH_LITE_WATCHDOG_TAG", &tag);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        output_within(cmd, Duration::from_secs(2))
    }));
    let msg = r.expect_err("the hung run passed");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("did not finish within 2 s"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    let left: Vec<u32> = processes()
        .into_iter()
        .filter(|p| {
            fs::read(format!("/proc/{}/environ", p.pid))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&tag))
        })
        .map(|p| p.pid)
        .collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

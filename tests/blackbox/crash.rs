//! Crash safety: an apply killed at a random moment (SIGKILL to its whole
//! process group, like a power cut or the OOM killer; or SIGTERM, like
//! systemd stopping it), then the same apply run again to completion, and
//! the system judged as its user would judge it:
//!
//! - real Nix finds the image root's store valid and every path intact,
//!   and the store holds nothing but registered paths;
//! - the profile points at the new system, whose activation and health
//!   check both ran to their end after the kill, or at the old one with the
//!   new one recorded as failed; /run/current-system agrees;
//! - `fh-lite status --json` agrees (generation, `pending` null, last
//!   attempt), and no run said "nothing to do" while an attempt was pending.
//!
//! The systems are `system-slow-v1` and `system-slow-v2` (tests/fixtures/
//! slow.nix): their switch-to-configuration logs `start`/`end` lines and
//! sleeps; v2 carries the 50 MiB file, served in slowed-down chunks, so
//! kills land in the fetch too. One uninterrupted run is timed first; the
//! kill moments are then spread over its phases (resolve, fetch, register,
//! profile, activation, health check), and each kill's phase is read back
//! from the logs.
//!
//! `FH_LITE_CRASH_POINTS` sets the number of kills (default 30, or 8 under
//! `FH_LITE_RUNNER`); `FH_LITE_CRASH_SEED` replays a run's kill moments
//! (every test prints its seed). scripts/crash runs a bigger sample.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use miniserde::json::{self, Value};

use crate::support::deploy::{nix, Deploy};
use crate::support::fixtures::fixtures;
use crate::support::procs::{process_group_tree, processes};
use crate::support::util::Run;

const PROFILES: &str = "nix/var/nix/profiles";
const SLOW_LOG: &str = "var/log/fh-lite-test/slow-switch.log";
const HEALTH_LOG: &str = "var/log/fh-lite-test/health.log";
const STATE: &str = "var/lib/fh-lite/state.json";
/// The health check scripts, at the image root's top (they run chrooted).
const HEALTH_OK: &str = "/fh-lite-health-ok";
const HEALTH_FAIL: &str = "/fh-lite-health-fail";
/// How long switch-to-configuration ([`set_sleep`]) and the health
/// check sleep in these tests, in seconds: long enough to be hit, short
/// enough to keep the module within a few minutes.
const SLEEP: &str = "0.7";
/// How long the slow switch-to-configuration under `root` sleeps: it
/// reads `SLOW_LOG.sleep` in the root (activation gets a minimal
/// environment, never a test's variables).
fn set_sleep(root: &Path, secs: &str) {
    let f = root.join(format!("{SLOW_LOG}.sleep"));
    fs::create_dir_all(f.parent().unwrap()).unwrap();
    fs::write(f, secs).unwrap();
}

/// Any single fh-lite run that takes longer than this is hung.
const RUN_LIMIT: Duration = Duration::from_secs(180);

/// Chrooting needs root; without it these tests only print a notice.
/// Chrooting needs root: a skip (a failure under FH_LITE_REQUIRE_ALL=1).
fn is_root() -> bool {
    crate::support::require("root to chroot", crate::support::is_root())
}

fn path(fixture: &str) -> String {
    fixtures().get(fixture).path.clone()
}

// ---------------------------------------------------------------- random

/// splitmix64: small, seedable, good enough to place kill moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_micros().max(1) as u64;
        lo + Duration::from_micros(self.next() % span)
    }
}

/// `FH_LITE_CRASH_SEED`, or one made from the clock; printed so a failing
/// run can be replayed.
fn seed(test: &str) -> u64 {
    let s = match std::env::var("FH_LITE_CRASH_SEED") {
        Ok(v) if !v.is_empty() => v
            .parse()
            .unwrap_or_else(|_| panic!("FH_LITE_CRASH_SEED={v:?} is not a number")),
        _ => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            t.as_nanos() as u64 ^ u64::from(std::process::id()) << 32
        }
    };
    eprintln!("{test}: seed {s} (FH_LITE_CRASH_SEED={s} replays it)");
    s
}

/// `FH_LITE_CRASH_POINTS`, else 30 natively and 8 under a runner (qemu).
fn points() -> usize {
    match std::env::var("FH_LITE_CRASH_POINTS") {
        Ok(v) if !v.is_empty() => v
            .parse()
            .unwrap_or_else(|_| panic!("FH_LITE_CRASH_POINTS={v:?} is not a number")),
        _ if std::env::var_os("FH_LITE_RUNNER").is_some_and(|r| !r.is_empty()) => 8,
        _ => 30,
    }
}

// ---------------------------------------------------------------- processes

/// `kill -SIG -- TARGET` (a pid, or `-PGID` for a process group).
fn signal(sig: &str, target: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A power cut for one process tree: stop the group and every descendant
/// (even one that moved to a group of its own, such as a chrooted script),
/// then SIGKILL them all, and reap the child.
fn power_cut(child: &mut Child) {
    let pid = child.id();
    signal("STOP", &format!("-{pid}"));
    let mut all = process_group_tree(pid);
    for p in &all {
        signal("STOP", &p.to_string());
    }
    for p in process_group_tree(pid) {
        if !all.contains(&p) {
            all.push(p);
        }
    }
    signal("KILL", &format!("-{pid}"));
    for p in &all {
        signal("KILL", &p.to_string());
    }
    let _ = child.wait();
}

/// Processes still in the process group `pgid` (its leader has exited).
fn group_left(pgid: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|p| p.pgid == pgid && p.pid != pgid)
        .map(|p| p.pid)
        .collect()
}

/// Wait for `child` at most [`RUN_LIMIT`]; a hung run is killed (None).
fn wait_limited(child: &mut Child) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait for fh-lite") {
            return Some(st.code().unwrap_or(-1));
        }
        if start.elapsed() > RUN_LIMIT {
            power_cut(child);
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------- the lab

/// One deployment (FlakeHub stand-in serving slow-v1 as 0.1.1, slow-v2 as
/// 0.1.2, system-exit1 as 0.1.3) and a template image root where slow-v1
/// was applied with `switch`; every point starts from a copy of it.
struct Lab {
    d: Deploy,
    template: PathBuf,
    v1: String,
    v2: String,
    /// Lines in the template's switch log.
    base_switch_lines: usize,
    runs: u32,
}

/// What a run left behind at some moment (to tell which phase it was in).
#[derive(Clone, Debug)]
struct Marks {
    nar_requests: usize,
    store_entries: Vec<String>,
    registration: Vec<u8>,
    profile: Option<String>,
    switch: Vec<String>,
    health: Vec<String>,
    state: Option<String>,
}

/// The kill moment, as read from the logs.
const PHASES: [&str; 10] = [
    "resolve",
    "fetch",
    "register",
    "profile",
    "activation",
    "health-check",
    "rollback",
    "commit",
    "finishing",
    "done",
];

impl Lab {
    fn new() -> Lab {
        let d = Deploy::new(
            "zstd",
            &[
                ("0.1.1", "system-slow-v1"),
                ("0.1.2", "system-slow-v2"),
                ("0.1.3", "system-exit1"),
            ],
            // 1 MiB pieces 25 ms apart: the big NAR takes about a second.
            r#"{"slow": [{"prefix": "/nar/", "chunk": 1048576, "delay_ms": 25}]}"#,
        );
        let bb = fixtures()
            .get("system-slow-v1")
            .closure
            .iter()
            .find(|p| p.ends_with("-busybox-static"))
            .expect("busybox in the slow system's closure")
            .clone();
        let bin = d.root.join("bin");
        fs::create_dir_all(&bin).unwrap();
        for name in ["sh", "sleep"] {
            std::os::unix::fs::symlink(format!("{bb}/bin/busybox"), bin.join(name)).unwrap();
        }
        for (file, code) in [(HEALTH_OK, 0), (HEALTH_FAIL, 1)] {
            let script = format!(
                "#!/bin/sh\n\
                 bb={bb}/bin/busybox\n\
                 log=/{HEALTH_LOG}\n\
                 $bb mkdir -p \"$($bb dirname $log)\"\n\
                 sys=$($bb readlink /run/current-system)\n\
                 echo \"health start $sys $$\" >> $log\n\
                 $bb sleep {SLEEP}\n\
                 echo \"health end $sys $$\" >> $log\n\
                 exit {code}\n"
            );
            let p = d.root.join(file.trim_start_matches('/'));
            crate::support::host::write_executable(&p, &script);
        }
        set_sleep(&d.root, "0");
        let c = d.command("=0.1.1", &["switch"]);
        let r = crate::support::deploy::no_secret(crate::support::util::output(c));
        assert_eq!(r.code, 0, "preparing the template (slow-v1, switch): {r:?}");
        let template = d.tmp.path().join("template");
        fs::rename(&d.root, &template).unwrap();
        let base_switch_lines = lines(&template.join(SLOW_LOG)).len();
        assert_eq!(base_switch_lines, 2, "the template's switch log");
        Lab {
            d,
            template,
            v1: path("system-slow-v1"),
            v2: path("system-slow-v2"),
            base_switch_lines,
            runs: 0,
        }
    }

    fn root(&self) -> &Path {
        &self.d.root
    }

    /// A fresh image root: a copy of the template (slow-v1 applied).
    fn reset(&self) {
        if self.d.root.exists() {
            let _ = Command::new("chmod")
                .args(["-R", "u+w"])
                .arg(&self.d.root)
                .status();
            fs::remove_dir_all(&self.d.root).unwrap();
        }
        let st = Command::new("cp")
            .arg("-a")
            .arg(&self.template)
            .arg(&self.d.root)
            .status()
            .expect("cp -a");
        assert!(st.success(), "cp -a the template");
    }

    /// The apply `req` with `extra`, in its own process group, output to
    /// files; not waited for.
    fn spawn(&mut self, req: &str, extra: &[&str]) -> (Child, PathBuf, PathBuf) {
        self.runs += 1;
        let out = self.d.tmp.path().join(format!("run-{}.out", self.runs));
        let err = self.d.tmp.path().join(format!("run-{}.err", self.runs));
        set_sleep(&self.d.root, SLEEP);
        let mut c = self.d.command(req, extra);
        c.stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .process_group(0);
        (crate::support::watchdog::spawn(c), out, err)
    }

    /// The apply `req` with `extra`, to completion (or [`RUN_LIMIT`]).
    fn run(&mut self, req: &str, extra: &[&str]) -> Run {
        let (mut child, out, err) = self.spawn(req, extra);
        let code = wait_limited(&mut child).unwrap_or(-2);
        collect(code, &out, &err)
    }

    fn marks(&self) -> Marks {
        let root = self.root();
        Marks {
            nar_requests: self.d.hub.requests_to("/nar/").len(),
            store_entries: self.d.store_entries(),
            registration: fs::read(root.join("nix-path-registration")).unwrap_or_default(),
            profile: fs::read_link(root.join(PROFILES).join("system"))
                .ok()
                .map(|t| t.to_string_lossy().into_owned()),
            switch: lines(&root.join(SLOW_LOG)),
            health: lines(&root.join(HEALTH_LOG)),
            state: fs::read_to_string(root.join(STATE)).ok(),
        }
    }

    /// Which phase a run was in when `now` was taken, `start` being the
    /// marks before it started; `exited`: it had already finished.
    fn phase(&self, start: &Marks, now: &Marks, exited: bool) -> &'static str {
        if exited {
            return "done";
        }
        let switch = &now.switch[start.switch.len().min(now.switch.len())..];
        let health = &now.health[start.health.len().min(now.health.len())..];
        let open = |lines: &[String], what: &str| {
            let starts = lines
                .iter()
                .filter(|l| l.starts_with(&format!("start {what}")))
                .count();
            let ends = lines
                .iter()
                .filter(|l| l.starts_with(&format!("end {what}")))
                .count();
            (starts, ends)
        };
        let health_started = health.iter().any(|l| l.starts_with("health start"));
        let health_open = health
            .iter()
            .filter(|l| l.starts_with("health start"))
            .count()
            > health
                .iter()
                .filter(|l| l.starts_with("health end"))
                .count();
        let v1_run = switch
            .iter()
            .any(|l| l.contains(" slow-v1 ") && l.starts_with("start"));
        let (boot_s, boot_e) = open(switch, "boot slow-v2");
        let (v2_s, v2_e) = (
            switch
                .iter()
                .filter(|l| l.starts_with("start") && l.contains(" slow-v2 "))
                .count(),
            switch
                .iter()
                .filter(|l| l.starts_with("end") && l.contains(" slow-v2 "))
                .count(),
        );
        if v1_run {
            "rollback"
        } else if boot_s > 0 {
            if boot_s > boot_e {
                "commit"
            } else {
                "finishing"
            }
        } else if health_open {
            "health-check"
        } else if health_started {
            "finishing"
        } else if v2_s > 0 {
            if v2_s > v2_e {
                "activation"
            } else {
                "health-check"
            }
        } else if now.profile != start.profile {
            "profile"
        } else if now.registration != start.registration {
            "register"
        } else if now.nar_requests > start.nar_requests || now.store_entries != start.store_entries
        {
            "fetch"
        } else {
            "resolve"
        }
    }
}

fn lines(p: &Path) -> Vec<String> {
    fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn collect(code: i32, out: &Path, err: &Path) -> Run {
    let r = Run {
        code,
        stdout: fs::read_to_string(out).unwrap_or_default(),
        stderr: fs::read_to_string(err).unwrap_or_default(),
    };
    crate::support::deploy::no_secret(r)
}

// ---------------------------------------------------------------- JSON

fn parse(text: &str) -> Option<BTreeMap<String, Value>> {
    match json::from_str::<Value>(text.trim()).ok()? {
        Value::Object(o) => Some(o.into_iter().collect()),
        _ => None,
    }
}

fn field<'a>(o: &'a BTreeMap<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let mut v = o.get(path[0])?;
    for k in &path[1..] {
        match v {
            Value::Object(m) => v = m.get(*k)?,
            _ => return None,
        }
    }
    Some(v)
}

fn text<'a>(o: &'a BTreeMap<String, Value>, path: &[&str]) -> Option<&'a str> {
    match field(o, path)? {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// The store paths in state.json's `failed`.
fn failed_paths(state: &BTreeMap<String, Value>) -> Vec<String> {
    match state.get("failed") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|f| match f {
                Value::Object(m) => match m.get("store_path") {
                    Some(Value::String(s)) => Some(s.clone()),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------- judging

/// What the end state must be.
#[derive(Clone, Copy, PartialEq)]
enum Want {
    /// slow-v2 activated and healthy, or slow-v1 with slow-v2 failed.
    NewOrRolledBack,
    /// slow-v1 with slow-v2 failed (the health check always fails).
    RolledBack,
}

/// Everything a user would check after the rerun; the problems found.
/// `after`: the marks right after the kill (log lines from then on count
/// as "after the kill", unless `done_before`: the killed run had finished
/// on its own); `trial`: the apply was a `--trial`.
fn judge(
    lab: &Lab,
    after: &Marks,
    done_before: bool,
    rerun: &Run,
    want: Want,
    trial: bool,
) -> Vec<String> {
    let mut bad = Vec::new();
    let root = lab.root();
    let (v1, v2) = (&lab.v1, &lab.v2);
    let now = lab.marks();

    // The rerun and what it said.
    if !matches!(rerun.code, 0 | 32 | 34) {
        bad.push(format!(
            "the rerun exited {}: {}",
            rerun.code,
            last_line(&rerun.stderr)
        ));
    }
    let pending_before = after
        .state
        .as_deref()
        .and_then(parse)
        .and_then(|s| s.get("pending").cloned())
        .filter(|p| !matches!(p, Value::Null));
    if let Some(p) = &pending_before {
        let recovering = rerun
            .stderr
            .find("fh-lite: recovering an interrupted attempt: ");
        if let Some(nothing) = rerun.stderr.find("nothing to do") {
            if recovering.is_none_or(|r| r > nothing) {
                bad.push("said \"nothing to do\" while an attempt was pending".into());
            }
        }
        let phase = match p {
            Value::Object(m) => match m.get("phase") {
                Some(Value::String(s)) => s.clone(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        if phase != "fetching" {
            let line = format!(
                "fh-lite: recovering an interrupted attempt: {v2} (switch, killed during {phase})"
            );
            if !rerun.stderr.contains(&line) {
                bad.push(format!("no line {line:?} in the rerun's stderr"));
            }
        }
    }

    // The profile and the running system.
    let target = now
        .profile
        .as_ref()
        .and_then(|l| fs::read_link(root.join(PROFILES).join(l)).ok())
        .map(|t| t.to_string_lossy().into_owned());
    let running = fs::read_link(root.join("run/current-system"))
        .ok()
        .map(|t| t.to_string_lossy().into_owned());
    let state = now.state.as_deref().and_then(parse);
    let failed = state.as_ref().map(failed_paths).unwrap_or_default();
    let since = |all: &[String], from: &[String]| all[from.len().min(all.len())..].to_vec();
    let switch_after = since(&now.switch, &after.switch);
    let health_after = since(&now.health, &after.health);
    match target.as_deref() {
        Some(t) if t == v2 && want == Want::NewOrRolledBack => {
            // Activated and checked to the end after the kill (unless the
            // killed run had already finished on its own).
            let act = if trial { "test" } else { "switch" };
            let ran = |lines: &[String]| {
                let last_start = lines
                    .iter()
                    .rposition(|l| l.starts_with(&format!("start {act} slow-v2 ")));
                last_start.is_some_and(|i| {
                    let pid = lines[i].rsplit(' ').next().unwrap_or("");
                    lines[i..]
                        .iter()
                        .any(|l| *l == format!("end {act} slow-v2 {pid}"))
                })
            };
            let healthy = |lines: &[String]| {
                lines
                    .iter()
                    .rposition(|l| l.starts_with("health start "))
                    .is_some_and(|i| {
                        let pid = lines[i].rsplit(' ').next().unwrap_or("");
                        lines[i..]
                            .iter()
                            .any(|l| *l == format!("health end {v2} {pid}"))
                    })
            };
            let (sw, he) = if done_before {
                (now.switch.clone(), now.health.clone())
            } else {
                (switch_after, health_after)
            };
            if !ran(&sw) {
                bad.push(format!(
                    "the profile is at slow-v2 but its `{act}` activation did not run to its end after the kill"
                ));
            }
            if !healthy(&he) {
                bad.push(
                    "the profile is at slow-v2 but its health check did not run to its end after the kill"
                        .into(),
                );
            }
            if running.as_deref() != Some(v2) {
                bad.push(format!("profile at slow-v2 but /run/current-system is {running:?}"));
            }
            if failed.contains(v2) {
                bad.push("slow-v2 is current and also in `failed`".into());
            }
        }
        Some(t) if t == v1 => {
            if !failed.contains(v2) {
                bad.push("the profile is at slow-v1 but slow-v2 is not in state.json's `failed`".into());
            }
            if running.as_deref() != Some(v1) {
                bad.push(format!("profile at slow-v1 but /run/current-system is {running:?}"));
            }
        }
        other => bad.push(format!(
            "the profile points at {other:?}, neither a healthy slow-v2 nor slow-v1 (with slow-v2 failed)"
        )),
    }

    // status --json agrees.
    let st = lab.d.fh(&["status", "--json"]);
    match parse(&st.stdout) {
        None => bad.push(format!("status --json: not a JSON object: {st:?}")),
        Some(s) => {
            if text(&s, &["generation_path"]) != target.as_deref() {
                bad.push(format!(
                    "status --json generation_path {:?}, the profile says {target:?}",
                    text(&s, &["generation_path"])
                ));
            }
            match s.get("pending") {
                Some(Value::Null) => {}
                None => bad.push("status --json has no \"pending\" field".into()),
                Some(_) => {
                    bad.push("status --json: pending is set after the rerun finished".into())
                }
            }
            let result = text(&s, &["last_attempt", "result"]).unwrap_or("none");
            let ok_results: &[&str] = if target.as_deref() == Some(v2.as_str()) {
                &["success"]
            } else {
                &["rolled-back", "skipped-failed"]
            };
            if !ok_results.contains(&result) {
                bad.push(format!(
                    "status --json last_attempt result {result:?}, wanted one of {ok_results:?}"
                ));
            }
            if text(&s, &["last_attempt", "store_path"]) != Some(v2.as_str()) {
                bad.push(format!(
                    "status --json last_attempt is for {:?}, not slow-v2",
                    text(&s, &["last_attempt", "store_path"])
                ));
            }
        }
    }

    // Real Nix judges the store; nothing unregistered is left in it.
    bad.extend(judge_store(lab));
    bad
}

fn last_line(s: &str) -> &str {
    s.lines().last().unwrap_or("")
}

/// `nix-store --verify --check-contents` after loading the registration,
/// and every store entry a valid path (no temp trees).
fn judge_store(lab: &Lab) -> Vec<String> {
    let mut bad = Vec::new();
    let (tmp, root) = (lab.d.tmp.path(), lab.root());
    let Ok(reg) = fs::File::open(root.join("nix-path-registration")) else {
        return vec!["no nix-path-registration in the image root".into()];
    };
    let mut load = nix(tmp, "nix-store", root);
    load.arg("--load-db").stdin(reg);
    let out = load.output().expect("nix-store --load-db");
    if !out.status.success() {
        bad.push(format!(
            "nix-store --load-db refused the registration: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
        return bad;
    }
    let mut verify = nix(tmp, "nix-store", root);
    verify.args(["--verify", "--check-contents"]);
    let out = verify.output().expect("nix-store --verify");
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || err.contains("modified") || err.contains("error") {
        bad.push(format!(
            "nix-store --verify --check-contents: {}",
            err.trim()
        ));
    }
    let mut all = nix(tmp, "nix", root);
    all.args(["path-info", "--all"]);
    let out = all.output().expect("nix path-info --all");
    let valid: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("/nix/store/").map(String::from))
        .collect();
    for e in lab.d.store_entries() {
        if e == ".links" {
            continue;
        }
        if e.contains("-fhlite-tmp-") {
            bad.push(format!("a temporary tree is left in the store: {e}"));
        } else if !valid.contains(&e) {
            bad.push(format!(
                "the store holds {e}, which is not a registered path"
            ));
        }
    }
    bad
}

// ---------------------------------------------------------------- one sample

/// One point's outcome.
struct Point {
    n: usize,
    delay: Duration,
    phase: &'static str,
    problems: Vec<String>,
}

/// A first, uninterrupted run from the template: when each phase was first
/// seen, and the run's length.
fn timeline(lab: &mut Lab, extra: &[&str]) -> (Vec<(&'static str, Duration)>, Duration) {
    lab.reset();
    let start_marks = lab.marks();
    let t0 = Instant::now();
    let (mut child, out, err) = lab.spawn("=0.1.2", extra);
    let mut seen: Vec<(&'static str, Duration)> = Vec::new();
    loop {
        let exited = child.try_wait().unwrap().is_some();
        let m = lab.marks();
        let p = lab.phase(&start_marks, &m, exited);
        if seen.last().is_none_or(|(q, _)| *q != p) && !seen.iter().any(|(q, _)| *q == p) {
            seen.push((p, t0.elapsed()));
        }
        if exited {
            break;
        }
        assert!(t0.elapsed() < RUN_LIMIT, "the timing run hung");
        std::thread::sleep(Duration::from_millis(5));
    }
    let total = t0.elapsed();
    let code = child.wait().unwrap().code().unwrap_or(-1);
    let r = collect(code, &out, &err);
    eprintln!(
        "timeline of one uninterrupted run ({:.2} s, exit {}): {}",
        total.as_secs_f64(),
        r.code,
        seen.iter()
            .map(|(p, t)| format!("{p} at {:.2} s", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    (seen, total)
}

/// Phases whose start a kill waits for: under load the timeline of one
/// run does not predict another's, so a kill meant for them is placed
/// relative to the moment the phase is seen starting. The fetch is one of
/// them: under qemu its length varies by a few tenths of a second from run
/// to run, and a kill placed late in the timeline's fetch landed in the
/// next run's activation, leaving no kill in the fetch.
const ANCHORED: [&str; 5] = ["fetch", "activation", "health-check", "rollback", "commit"];

/// When to kill: `delay` after the run starts (`anchor` None), or after
/// the phase `anchor` is seen starting.
#[derive(Clone, Copy)]
struct Moment {
    anchor: Option<&'static str>,
    delay: Duration,
}

/// Kill moments spread over the phases of `seen`: point i lands in phase
/// i mod (number of phases), uniformly inside it.
fn delays(
    rng: &mut Rng,
    seen: &[(&'static str, Duration)],
    total: Duration,
    n: usize,
    only: Option<&[&str]>,
) -> Vec<Moment> {
    let mut spans: Vec<(&'static str, Duration, Duration)> = Vec::new();
    for (i, (p, t)) in seen.iter().enumerate() {
        if *p == "done" || only.is_some_and(|o| !o.contains(p)) {
            continue;
        }
        let end = seen.get(i + 1).map_or(total, |x| x.1);
        spans.push((p, *t, end.max(*t + Duration::from_millis(1))));
    }
    if spans.is_empty() {
        spans.push(("resolve", Duration::ZERO, total));
    }
    (0..n)
        .map(|i| {
            let (p, lo, hi) = spans[i % spans.len()];
            if ANCHORED.contains(&p) {
                // The fetch's end moves the most: aim at its first half.
                let span = if p == "fetch" { (hi - lo) / 2 } else { hi - lo };
                Moment {
                    anchor: Some(p),
                    delay: rng.between(Duration::ZERO, span),
                }
            } else {
                Moment {
                    anchor: None,
                    delay: rng.between(lo, hi),
                }
            }
        })
        .collect()
}

/// Wait for `m`: its delay from now, or from the moment the run is seen in
/// phase `m.anchor` (or past it, or exited; polled every 10 ms).
fn wait_for(lab: &Lab, start: &Marks, child: &mut Child, m: Moment) {
    if let Some(anchor) = m.anchor {
        let want = PHASES.iter().position(|p| *p == anchor).unwrap_or(0);
        let t0 = Instant::now();
        while t0.elapsed() < RUN_LIMIT {
            let exited = child.try_wait().unwrap().is_some();
            let now = lab.phase(start, &lab.marks(), exited);
            if exited || PHASES.iter().position(|p| *p == now).unwrap_or(0) >= want {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    std::thread::sleep(m.delay);
}

enum Kill {
    /// SIGKILL to the whole process group (and any child that left it).
    Power,
    /// SIGTERM to the fh-lite process only.
    Term,
}

/// Kill the apply at each delay, rerun it to completion, judge; returns
/// every point's outcome.
fn sample(lab: &mut Lab, delays: &[Moment], extra: &[&str], kill: Kill, want: Want) -> Vec<Point> {
    let trial = extra.contains(&"--trial");
    let mut points = Vec::new();
    for (n, &moment) in delays.iter().enumerate() {
        lab.reset();
        let start = lab.marks();
        let (mut child, out, err) = lab.spawn("=0.1.2", extra);
        wait_for(lab, &start, &mut child, moment);
        let delay = moment.delay;
        let exited = child.try_wait().unwrap().is_some();
        let mut problems = Vec::new();
        let phase;
        match kill {
            Kill::Power => {
                power_cut(&mut child);
                phase = lab.phase(&start, &lab.marks(), exited);
            }
            Kill::Term => {
                phase = lab.phase(&start, &lab.marks(), exited);
                let pid = child.id();
                if !exited {
                    signal("TERM", &pid.to_string());
                }
                let code = wait_limited(&mut child);
                let r = collect(code.unwrap_or(-2), &out, &err);
                let left = group_left(pid);
                if !left.is_empty() {
                    problems.push(format!(
                        "after SIGTERM fh-lite exited {} and left processes running: {left:?}",
                        r.code
                    ));
                    signal("KILL", &format!("-{pid}"));
                    std::thread::sleep(Duration::from_millis(100));
                }
                problems.extend(judge_term(lab, &start, phase, &r));
            }
        }
        let after = lab.marks();
        // The killed run must not have moved the profile if it was a trial
        // killed before its commit.
        if trial && !matches!(phase, "commit" | "finishing" | "done") {
            if after.profile != start.profile {
                problems.push(format!(
                    "a trial killed during {phase} moved the profile to {:?}",
                    after.profile
                ));
            }
            if after.switch.iter().any(|l| l.starts_with("start boot")) {
                problems.push(format!("a trial killed during {phase} ran `boot`"));
            }
            if lab.root().join(PROFILES).join("system-2-link").exists() {
                problems.push(format!(
                    "a trial killed during {phase} created generation 2"
                ));
            }
        }
        if matches!(phase, "profile" | "activation" | "health-check") {
            let pending = after
                .state
                .as_deref()
                .and_then(parse)
                .and_then(|s| s.get("pending").cloned());
            if !matches!(pending, Some(Value::Object(_))) && matches!(kill, Kill::Power) {
                problems.push(format!(
                    "killed during {phase}: state.json has no `pending` attempt"
                ));
            }
        }
        // The killed run finished its attempt on its own when it exited
        // first; after a SIGTERM it finishes (or rolls back) the step it is
        // in and exits itself; and a kill can land after it recorded the
        // attempt's end but before it exited. Then its own log lines count.
        let finished =
            phase == "done" || matches!(kill, Kill::Term) || attempt_recorded(&after, &lab.v2);
        let rerun = lab.run("=0.1.2", extra);
        problems.extend(judge(lab, &after, finished, &rerun, want, trial));
        points.push(Point {
            n,
            delay,
            phase,
            problems,
        });
    }
    points
}

/// state.json says the attempt at `path` ended (no `pending`, and a last
/// attempt for it that is not "running").
fn attempt_recorded(m: &Marks, path: &str) -> bool {
    let Some(s) = m.state.as_deref().and_then(parse) else {
        return false;
    };
    let pending = s.get("pending").is_some_and(|p| !matches!(p, Value::Null));
    !pending
        && text(&s, &["last_attempt", "store_path"]) == Some(path)
        && text(&s, &["last_attempt", "result"]).is_some_and(|r| r != "running")
}

/// SIGTERM: during resolve/fetch/register, exit 42 with nothing changed;
/// later, the step finishes (or rolls back) and the exit is the normal one.
fn judge_term(lab: &Lab, start: &Marks, phase: &str, r: &Run) -> Vec<String> {
    let mut bad = Vec::new();
    let now = lab.marks();
    let went_on = now.switch.len() > start.switch.len();
    match phase {
        "resolve" | "fetch" | "register" if !went_on => {
            if r.code != 42 {
                bad.push(format!(
                    "SIGTERM during {phase}: exit {} (wanted 42): {}",
                    r.code,
                    last_line(&r.stderr)
                ));
            } else if !r
                .stderr
                .contains("interrupted by a signal; nothing was changed")
            {
                bad.push(format!(
                    "SIGTERM during {phase}: exit 42 without saying so: {}",
                    last_line(&r.stderr)
                ));
            }
            if now.profile != start.profile {
                bad.push(format!("SIGTERM during {phase} moved the profile"));
            }
            if let Some(e) = now
                .store_entries
                .iter()
                .find(|e| e.contains("-fhlite-tmp-"))
            {
                bad.push(format!("SIGTERM during {phase} left a temporary tree: {e}"));
            }
            let s = now.state.as_deref().and_then(parse);
            let result = s
                .as_ref()
                .and_then(|s| text(s, &["last_attempt", "result"]).map(String::from));
            if result.as_deref() != Some("interrupted") {
                bad.push(format!("SIGTERM during {phase}: last_attempt result {result:?}, wanted \"interrupted\""));
            }
            if s.as_ref()
                .and_then(|s| s.get("pending"))
                .is_some_and(|p| !matches!(p, Value::Null))
            {
                bad.push(format!("SIGTERM during {phase}: pending left set"));
            }
        }
        "done" => {}
        _ => {
            if !matches!(r.code, 0 | 32) {
                bad.push(format!(
                    "SIGTERM during {phase}: exit {} (wanted 0, finished, or 32, rolled back): {}",
                    r.code,
                    last_line(&r.stderr)
                ));
            }
        }
    }
    bad
}

/// Print every point, then fail with a summary by phase if any point had
/// problems or `must_cover` phases were never hit.
fn report(test: &str, seed: u64, points: &[Point], must_cover: &[&str]) {
    let mut by_phase: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut msg = String::new();
    for p in points {
        let e = by_phase.entry(p.phase).or_default();
        e.0 += 1;
        if !p.problems.is_empty() {
            e.1 += 1;
        }
        eprintln!(
            "{test}: point {} at {:.3} s: {}: {}",
            p.n,
            p.delay.as_secs_f64(),
            p.phase,
            if p.problems.is_empty() {
                "ok".to_string()
            } else {
                p.problems.join("; ")
            }
        );
    }
    let spread: Vec<String> = PHASES
        .iter()
        .filter_map(|ph| by_phase.get(ph).map(|(n, f)| format!("{ph} {n} ({f} bad)")))
        .collect();
    eprintln!("{test}: kills by phase: {}", spread.join(", "));
    for ph in must_cover {
        if !by_phase.contains_key(ph) {
            let _ = writeln!(
                msg,
                "no kill landed in {ph} (spread: {})",
                spread.join(", ")
            );
        }
    }
    let failing: Vec<&Point> = points.iter().filter(|p| !p.problems.is_empty()).collect();
    if !failing.is_empty() {
        let _ = writeln!(
            msg,
            "{} of {} points failed (kills by phase: {}):",
            failing.len(),
            points.len(),
            spread.join(", ")
        );
        // The distinct problems, by phase, each with how many points had it.
        let mut distinct: BTreeMap<(usize, &str, &str), usize> = BTreeMap::new();
        for p in &failing {
            let order = PHASES.iter().position(|x| *x == p.phase).unwrap_or(99);
            for q in &p.problems {
                *distinct.entry((order, p.phase, q.as_str())).or_default() += 1;
            }
        }
        for ((_, phase, q), n) in distinct {
            let _ = writeln!(msg, "  killed during {phase} ({n}x): {q}");
        }
    }
    assert!(
        msg.is_empty(),
        "{test}: seed {seed} (FH_LITE_CRASH_SEED={seed} replays it)\n{msg}"
    );
}

// ---------------------------------------------------------------- tests

/// SIGKILL to the whole process group at moments spread over every phase.
#[test]
fn killed_anywhere_then_rerun_ends_healthy_or_rolled_back() {
    if !is_root() {
        return;
    }
    let test = "crash/sigkill";
    let seed = seed(test);
    let mut rng = Rng(seed);
    let mut lab = Lab::new();
    let extra = ["switch", "--health-check", HEALTH_OK];
    let (seen, total) = timeline(&mut lab, &extra);
    let d = delays(&mut rng, &seen, total, points(), None);
    let pts = sample(&mut lab, &d, &extra, Kill::Power, Want::NewOrRolledBack);
    report(test, seed, &pts, &["fetch", "activation", "health-check"]);
}

/// SIGTERM to fh-lite alone: exit 42 with nothing changed during the
/// transfer; during activation or the health check it finishes the step
/// (or rolls back) and exits normally; a rerun ends in a sound state.
#[test]
fn sigterm_stops_the_transfer_and_finishes_an_activation() {
    if !is_root() {
        return;
    }
    let test = "crash/sigterm";
    let seed = seed(test);
    let mut rng = Rng(seed);
    let mut lab = Lab::new();
    let extra = ["switch", "--health-check", HEALTH_OK];
    let (seen, total) = timeline(&mut lab, &extra);
    let n = (points() / 3).max(3);
    let d = delays(
        &mut rng,
        &seen,
        total,
        n,
        Some(&["fetch", "activation", "health-check"]),
    );
    let pts = sample(&mut lab, &d, &extra, Kill::Term, Want::NewOrRolledBack);
    report(test, seed, &pts, &["fetch", "activation"]);
}

/// With a health check that always fails, every kill ends, after the
/// rerun, at slow-v1 with slow-v2 recorded as failed.
#[test]
fn killed_with_a_failing_health_check_ends_rolled_back() {
    if !is_root() {
        return;
    }
    let test = "crash/health-fails";
    let seed = seed(test);
    let mut rng = Rng(seed);
    let mut lab = Lab::new();
    let extra = ["switch", "--health-check", HEALTH_FAIL];
    let (seen, total) = timeline(&mut lab, &extra);
    let n = (points() / 5).max(3);
    let d = delays(
        &mut rng,
        &seen,
        total,
        n,
        Some(&["fetch", "activation", "health-check", "rollback"]),
    );
    let pts = sample(&mut lab, &d, &extra, Kill::Power, Want::RolledBack);
    report(test, seed, &pts, &["activation"]);
}

/// `--trial` whose health check fails: the profile never moves and `boot`
/// never runs; the trial is undone with slow-v1's `test`.
#[test]
fn trial_with_a_failing_health_check_never_moves_the_profile() {
    if !is_root() {
        return;
    }
    let mut lab = Lab::new();
    lab.reset();
    let r = lab.run(
        "=0.1.2",
        &["switch", "--trial", "--health-check", HEALTH_FAIL],
    );
    assert_eq!(r.code, 32, "a failed trial is rolled back: {r:?}");
    let m = lab.marks();
    assert_eq!(m.profile.as_deref(), Some("system-1-link"), "{r:?}");
    assert!(
        !lab.root().join(PROFILES).join("system-2-link").exists(),
        "a failed trial created a generation: {r:?}"
    );
    let new: Vec<&String> = m.switch[lab.base_switch_lines..].iter().collect();
    assert!(
        !new.iter().any(|l| l.starts_with("start boot")),
        "boot ran: {new:?}"
    );
    assert!(
        new.iter().any(|l| l.starts_with("end test slow-v2 ")),
        "the trial activates with `test`: {new:?}"
    );
    assert!(
        new.last()
            .is_some_and(|l| l.starts_with("end test slow-v1 ")),
        "undone with slow-v1's `test`: {new:?}"
    );
    assert_eq!(
        fs::read_link(lab.root().join("run/current-system")).ok(),
        Some(PathBuf::from(&lab.v1))
    );
    let state = parse(&m.state.unwrap_or_default()).expect("state.json");
    assert!(failed_paths(&state).contains(&lab.v2), "{state:?}");
}

/// A trial killed before its commit leaves the profile unmoved and runs no
/// `boot`; the rerun (a trial again) ends healthy or rolled back.
#[test]
fn trial_killed_leaves_the_profile_unmoved() {
    if !is_root() {
        return;
    }
    let test = "crash/trial";
    let seed = seed(test);
    let mut rng = Rng(seed);
    let mut lab = Lab::new();
    let extra = ["switch", "--trial", "--health-check", HEALTH_OK];
    let (seen, total) = timeline(&mut lab, &extra);
    assert!(
        seen.iter().any(|(p, _)| *p == "activation"),
        "the uninterrupted --trial run never activated (is --trial supported?): {seen:?}"
    );
    let n = (points() / 5).max(3);
    let d = delays(
        &mut rng,
        &seen,
        total,
        n,
        Some(&["activation", "health-check"]),
    );
    let pts = sample(&mut lab, &d, &extra, Kill::Power, Want::NewOrRolledBack);
    report(test, seed, &pts, &["activation"]);
}

/// After a `boot` (the profile ahead of the running system), a failed
/// switch rolls back to the running system, and the profile to the
/// generation pointing at it, not to the `boot` generation.
#[test]
fn rollback_after_boot_returns_to_the_running_system() {
    if !is_root() {
        return;
    }
    let mut lab = Lab::new();
    lab.reset();
    let r = lab.run("=0.1.2", &["boot"]);
    assert_eq!(r.code, 0, "{r:?}");
    let m = lab.marks();
    assert_eq!(m.profile.as_deref(), Some("system-2-link"), "{r:?}");
    let running = |root: &Path| {
        fs::read_link(root.join("run/current-system"))
            .ok()
            .map(|t| t.to_string_lossy().into_owned())
    };
    assert_eq!(
        running(lab.root()).as_deref(),
        Some(lab.v1.as_str()),
        "boot left the running system"
    );
    let r = lab.run("=0.1.3", &["switch"]);
    assert_eq!(r.code, 32, "{r:?}");
    let m = lab.marks();
    let link = m.profile.clone().unwrap_or_default();
    let target = fs::read_link(lab.root().join(PROFILES).join(&link))
        .ok()
        .map(|t| t.to_string_lossy().into_owned());
    assert_eq!(
        target.as_deref(),
        Some(lab.v1.as_str()),
        "rolled back to the running slow-v1, not to generation 2 (profile -> {link}): {r:?}"
    );
    assert_eq!(
        running(lab.root()).as_deref(),
        Some(lab.v1.as_str()),
        "{r:?}"
    );
    assert!(
        m.switch
            .last()
            .is_some_and(|l| l.starts_with("end switch slow-v1 ")),
        "slow-v1 was switched to again: {:?}",
        m.switch
    );
    let st = parse(&lab.d.fh(&["status", "--json"]).stdout).expect("status --json");
    assert_eq!(text(&st, &["generation_path"]), Some(lab.v1.as_str()));
}

/// `fh-lite rollback` killed (power cut) while the old system's switch
/// script runs: the profile already points at it, but it was never
/// activated to the end. `status` says so, and `fh-lite recover` switches
/// to the same generation again, to the end of its script.
#[test]
fn rollback_killed_mid_switch_is_finished_by_recover() {
    if !is_root() {
        return;
    }
    let mut lab = Lab::new();
    lab.reset();
    let r = lab.run("=0.1.2", &["switch"]);
    assert_eq!(r.code, 0, "{r:?}");
    let start = lab.marks();
    assert_eq!(start.profile.as_deref(), Some("system-2-link"), "{r:?}");
    let err = lab.d.tmp.path().join("rollback.err");
    let mut c =
        crate::support::util::fh_lite(&["rollback", "--root", lab.root().to_str().unwrap()]);
    set_sleep(lab.root(), SLEEP);
    c.stdout(Stdio::null())
        .stderr(fs::File::create(&err).unwrap())
        .process_group(0);
    let mut child = crate::support::watchdog::spawn(c);
    let began = Instant::now();
    let started = |m: &Marks| {
        m.switch[start.switch.len().min(m.switch.len())..]
            .iter()
            .any(|l| l.starts_with("start switch slow-v1 "))
    };
    while !started(&lab.marks()) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "rollback ended before slow-v1's script started: {}",
            fs::read_to_string(&err).unwrap_or_default()
        );
        assert!(
            began.elapsed() < RUN_LIMIT,
            "slow-v1's script never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    power_cut(&mut child);
    let m = lab.marks();
    assert_eq!(m.profile.as_deref(), Some("system-1-link"));
    assert!(
        m.switch
            .last()
            .is_some_and(|l| l.starts_with("start switch slow-v1 ")),
        "killed inside slow-v1's script: {:?}",
        m.switch
    );
    let st = lab.d.fh(&["status"]);
    assert!(
        st.stdout
            .contains("rollback to generation 1, killed before its switch script finished"),
        "status names the interrupted rollback: {st:?}"
    );
    let r = lab.d.fh(&["recover"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("recovering an interrupted rollback to generation 1"),
        "{r:?}"
    );
    let m = lab.marks();
    assert_eq!(m.profile.as_deref(), Some("system-1-link"), "{r:?}");
    assert!(
        m.switch
            .last()
            .is_some_and(|l| l.starts_with("end switch slow-v1 ")),
        "slow-v1's switch ran again to its end: {:?}",
        m.switch
    );
    let st = parse(&lab.d.fh(&["status", "--json"]).stdout).expect("status --json");
    assert!(
        matches!(st.get("pending"), Some(Value::Null)),
        "pending cleared"
    );
    assert_eq!(text(&st, &["generation_path"]), Some(lab.v1.as_str()));
    assert_eq!(text(&st, &["last_attempt", "result"]), Some("success"));
    // A second recover has nothing left to do.
    let r = lab.d.fh(&["recover"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("nothing to recover"), "{r:?}");
}

/// `start`/`end` lines of the slow switch log after the first `skip`, as
/// (word, variant, pid); and the pairs of runs that overlapped: a `start`
/// while another run's `start` had no `end` yet.
fn overlaps(log: &[String], skip: usize) -> Vec<String> {
    let mut open: Vec<String> = Vec::new();
    let mut found = Vec::new();
    for l in log.iter().skip(skip) {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (Some(word), Some(pid)) = (f.first(), f.last()) else {
            continue;
        };
        match *word {
            "start" => {
                if !open.is_empty() {
                    found.push(format!("'{l}' while {open:?} still ran"));
                }
                open.push(pid.to_string());
            }
            "end" => open.retain(|p| p != pid),
            _ => {}
        }
    }
    found
}

/// Whether process `pid` runs (exists and is no zombie).
fn alive(pid: &str) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 1..].trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

/// Apply slow-v2 with `extra`; kill fh-lite alone (SIGKILL to its pid, not
/// its group: the OOM killer, `kill -9 PID`) once the script has started,
/// and rerun at once. Returns the rerun and the orphan's pid.
fn kill_alone_mid_activation(lab: &mut Lab, sleep: &str, extra: &[&str]) -> (Run, String) {
    lab.reset();
    let err = lab.d.tmp.path().join("alone.err");
    set_sleep(lab.root(), sleep);
    let mut c = lab.d.command("=0.1.2", extra);
    c.stdout(Stdio::null())
        .stderr(fs::File::create(&err).unwrap());
    let mut child = crate::support::watchdog::spawn(c);
    let began = Instant::now();
    let base = lab.base_switch_lines;
    let orphan = loop {
        let log = lines(&lab.root().join(SLOW_LOG));
        if let Some(l) = log[base.min(log.len())..]
            .iter()
            .find(|l| l.starts_with("start switch slow-v2 "))
        {
            break l.rsplit(' ').next().unwrap_or("").to_string();
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the apply ended before slow-v2's script started: {}",
            fs::read_to_string(&err).unwrap_or_default()
        );
        assert!(
            began.elapsed() < RUN_LIMIT,
            "slow-v2's script never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    signal("KILL", &child.id().to_string());
    let _ = child.wait();
    assert!(
        alive(&orphan),
        "the script (pid {orphan}) should outlive fh-lite"
    );
    set_sleep(lab.root(), SLEEP);
    let c = lab.d.command("=0.1.2", extra);
    let r = crate::support::deploy::no_secret(crate::support::util::output(c));
    (r, orphan)
}

/// fh-lite killed alone while its activation script runs: the script lives
/// on, and the rerun's recovery waits for it before it activates again
/// (never two side by side); past `--activation-timeout` it kills it first.
#[test]
fn killed_alone_mid_activation_never_runs_two_activations_at_once() {
    if !is_root() {
        return;
    }
    let mut lab = Lab::new();
    // The orphan ends within its time limit: waited for.
    let (r, orphan) = kill_alone_mid_activation(&mut lab, "2", &["switch"]);
    assert_eq!(r.code, 0, "{r:?}");
    let log = lines(&lab.root().join(SLOW_LOG));
    let both = overlaps(&log, lab.base_switch_lines);
    assert!(
        both.is_empty(),
        "two activations ran side by side: {both:?}\nlog: {log:?}\n{r:?}"
    );
    assert!(
        log.iter()
            .any(|l| *l == format!("end switch slow-v2 {orphan}")),
        "the orphan was not left to finish: {log:?}"
    );
    assert!(
        r.stderr
            .contains("is still running; waiting for it to finish")
            && r.stderr.contains("finished; recovering"),
        "the rerun does not say it waited: {r:?}"
    );
    assert!(
        log.last()
            .is_some_and(|l| l.starts_with("end switch slow-v2 ")),
        "slow-v2 was activated again to its end: {log:?}"
    );
    // The orphan outlives --activation-timeout: killed with its group.
    let (r, orphan) = kill_alone_mid_activation(
        &mut lab,
        "30",
        &["switch", "--activation-timeout", "3", "--no-rollback"],
    );
    let log = lines(&lab.root().join(SLOW_LOG));
    assert!(
        r.stderr
            .contains("did not finish within --activation-timeout; killed its process group"),
        "the rerun does not say it killed the orphan: {r:?}"
    );
    assert!(!alive(&orphan), "the orphan (pid {orphan}) still runs");
    assert!(
        !log.iter()
            .any(|l| *l == format!("end switch slow-v2 {orphan}")),
        "the orphan was not killed: {log:?}"
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        log.last()
            .is_some_and(|l| l.starts_with("end switch slow-v2 ")),
        "slow-v2 was activated again to its end: {log:?}"
    );
}

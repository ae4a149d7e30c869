//! State kept between runs, in `<state dir>/state.json` (default
//! /var/lib/fh-lite, under `--root DIR` when given), and the apply lock.
//!
//! ```text
//! { "version": 1,
//!   "last_attempt": Record | null, "last_success": Record | null,
//!   "failed": [ { "store_path", "reference", "time", "result" } … ] }
//! Record = { "reference", "store_path", "generation": u64|null,
//!            "time": unix seconds (start), "result": "running" | class,
//!            "exit_code": u8|null, "duration_ms", "bytes_downloaded" }
//! ```
//!
//! - Written atomically: a temporary file in the same directory, fsync,
//!   rename over state.json, fsync of the directory.
//! - A path whose activation failed is listed in `failed` (at most
//!   [`MAX_FAILED`], oldest dropped); a later apply that resolves to it is
//!   skipped with `SkippedFailed` unless `--retry-failed`; a later success
//!   removes it.
//! - A corrupt (or oversized) state.json: commands that write state move it
//!   aside to `state.json.corrupt-<unix time>` with a warning and start
//!   afresh, so an unattended timer is never stuck on it; `status` only
//!   reads, and reports it as an error naming the file.
//! - One apply (or rollback) at a time: an exclusive `flock` on
//!   `<state dir>/lock` ([`lock`]); a second run stops at once with
//!   `AlreadyRunning`, naming the lock file and the holder's pid.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use miniserde::{json, Deserialize, Serialize};

use crate::activate::Report;
use crate::cli::{ApplyOpts, Common};
use crate::error::{Error, Exit};
use crate::util::unix_now;

/// The state file is small; anything bigger is not ours.
const MAX_STATE_BYTES: u64 = 1 << 20;
/// How many failed paths are remembered.
pub const MAX_FAILED: usize = 100;

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub reference: String,
    pub store_path: String,
    pub generation: Option<u64>,
    pub time: u64,
    pub result: String,
    pub exit_code: Option<u8>,
    pub duration_ms: u64,
    pub bytes_downloaded: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FailedPath {
    pub store_path: String,
    pub reference: String,
    pub time: u64,
    pub result: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub version: u32,
    pub last_attempt: Option<Record>,
    pub last_success: Option<Record>,
    pub failed: Vec<FailedPath>,
}

/// One apply (or rollback) in progress; made by the caller when the store
/// path is known, finished with [`record_result`].
#[derive(Clone, Debug)]
pub struct Attempt {
    pub reference: String,
    pub store_path: String,
    /// Set by the caller after the fetch step.
    pub bytes_downloaded: u64,
    time: u64,
    started: Instant,
}

impl Attempt {
    pub fn start(reference: &str, store_path: &str) -> Attempt {
        Attempt {
            reference: reference.to_string(),
            store_path: store_path.to_string(),
            bytes_downloaded: 0,
            time: unix_now(),
            started: Instant::now(),
        }
    }

    fn record(&self, result: &str, exit_code: Option<u8>, generation: Option<u64>) -> Record {
        Record {
            reference: self.reference.clone(),
            store_path: self.store_path.clone(),
            generation,
            time: self.time,
            result: result.to_string(),
            exit_code,
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            bytes_downloaded: self.bytes_downloaded,
        }
    }
}

/// The word recorded for an exit class.
pub fn result_name(exit: Exit) -> &'static str {
    match exit {
        Exit::Success => "success",
        Exit::Internal => "internal-error",
        Exit::Usage => "usage-error",
        Exit::NotImplemented => "not-implemented",
        Exit::Unauthorized => "unauthorized",
        Exit::Forbidden => "forbidden",
        Exit::NotFound => "not-found",
        Exit::Unavailable => "unavailable",
        Exit::BadResponse => "bad-response",
        Exit::Network => "network-error",
        Exit::Cache => "cache-error",
        Exit::Verification => "verification-failed",
        Exit::Store => "store-error",
        Exit::ActivationFailed => "activation-failed",
        Exit::ActivationPartial => "activation-partial",
        Exit::RolledBack => "rolled-back",
        Exit::RollbackFailed => "rollback-failed",
        Exit::SkippedFailed => "skipped-failed",
        Exit::RebootNeeded => "reboot-needed",
        Exit::AlreadyRunning => "already-running",
    }
}

fn state_file(common: &Common) -> PathBuf {
    common.state_dir.join("state.json")
}

enum Loaded {
    Missing,
    Ok(Box<State>),
    Corrupt(String),
}

fn read_state(path: &Path) -> Result<Loaded, Error> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(e) => return Err(Error::io("read state file", path, &e)),
    };
    let mut text = String::new();
    // Bounded: one more byte than allowed tells "too big" apart.
    if let Err(e) = file.take(MAX_STATE_BYTES + 1).read_to_string(&mut text) {
        return Ok(Loaded::Corrupt(e.to_string()));
    }
    if text.len() as u64 > MAX_STATE_BYTES {
        return Ok(Loaded::Corrupt(format!(
            "larger than {MAX_STATE_BYTES} bytes"
        )));
    }
    match json::from_str::<State>(&text) {
        Ok(s) => Ok(Loaded::Ok(Box::new(s))),
        Err(_) => Ok(Loaded::Corrupt("not valid fh-lite state JSON".to_string())),
    }
}

/// For `status`: a corrupt file is an error naming it.
pub fn load(common: &Common) -> Result<State, Error> {
    let path = state_file(common);
    match read_state(&path)? {
        Loaded::Missing => Ok(<State as Default>::default()),
        Loaded::Ok(s) => Ok(*s),
        Loaded::Corrupt(why) => Err(Error::new(
            Exit::Internal,
            format!(
                "state file {}: {why}; the next apply moves it aside, or delete it",
                path.display()
            ),
        )),
    }
}

/// For writers: a corrupt file is moved aside with a warning.
fn load_for_update(common: &Common) -> Result<State, Error> {
    let path = state_file(common);
    match read_state(&path)? {
        Loaded::Missing => Ok(<State as Default>::default()),
        Loaded::Ok(s) => Ok(*s),
        Loaded::Corrupt(why) => {
            let aside = common
                .state_dir
                .join(format!("state.json.corrupt-{}", unix_now()));
            std::fs::rename(&path, &aside)
                .map_err(|e| Error::io("move corrupt state file aside to", &aside, &e))?;
            eprintln!(
                "fh-lite: warning: state file {}: {why}; moved aside to {}, starting afresh",
                path.display(),
                aside.display()
            );
            Ok(<State as Default>::default())
        }
    }
}

/// Write state.json atomically (temp + fsync + rename + fsync dir).
fn save(common: &Common, state: &State) -> Result<(), Error> {
    let dir = &common.state_dir;
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create state directory", dir, &e))?;
    let path = state_file(common);
    let tmp = dir.join(format!(".state.json.tmp-{}", std::process::id()));
    let mut s = State {
        version: 1,
        ..state.clone()
    };
    if s.failed.len() > MAX_FAILED {
        let drop = s.failed.len() - MAX_FAILED;
        s.failed.drain(..drop);
    }
    let text = json::to_string(&s) + "\n";
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io("write state file", &path, &e)
    })
}

fn update(common: &Common, f: impl FnOnce(&mut State)) -> Result<(), Error> {
    let mut s = load_for_update(common)?;
    f(&mut s);
    save(common, &s)
}

/// Record that an attempt started ("running" until [`record_result`]), so
/// a crash mid-activation is visible in `status`.
pub fn record_attempt(common: &Common, attempt: &Attempt) -> Result<(), Error> {
    update(common, |s| {
        s.last_attempt = Some(attempt.record("running", None, None));
    })
}

/// Record how an attempt ended: always the last attempt; on Success or
/// RebootNeeded also the last success (and the path is no longer failed);
/// when `report.path_failed`, the path joins the failed list.
pub fn record_result(
    common: &Common,
    attempt: &Attempt,
    exit: Exit,
    report: &Report,
) -> Result<(), Error> {
    let rec = attempt.record(result_name(exit), Some(exit.code()), report.generation);
    update(common, |s| {
        if matches!(exit, Exit::Success | Exit::RebootNeeded) {
            s.last_success = Some(rec.clone());
            s.failed.retain(|f| f.store_path != attempt.store_path);
        }
        if report.path_failed {
            push_failed(s, &attempt.store_path, &attempt.reference, exit);
        }
        s.last_attempt = Some(rec);
    })
}

fn push_failed(s: &mut State, store_path: &str, reference: &str, exit: Exit) {
    s.failed.retain(|f| f.store_path != store_path);
    s.failed.push(FailedPath {
        store_path: store_path.to_string(),
        reference: reference.to_string(),
        time: unix_now(),
        result: result_name(exit).to_string(),
    });
}

/// Remember that `store_path` failed activation (tests; `record_result`
/// does it for an apply).
#[cfg(test)]
pub fn mark_failed(
    common: &Common,
    store_path: &str,
    reference: &str,
    exit: Exit,
) -> Result<(), Error> {
    update(common, |s| push_failed(s, store_path, reference, exit))
}

/// The failed-list entry for `store_path`, if it failed before.
pub fn is_failed(common: &Common, store_path: &str) -> Result<Option<FailedPath>, Error> {
    let s = load_for_update(common)?;
    Ok(s.failed.into_iter().find(|f| f.store_path == store_path))
}

/// Err(SkippedFailed) when `store_path` failed before and `--retry-failed`
/// was not given.
pub fn check_not_failed(common: &Common, opts: &ApplyOpts, store_path: &str) -> Result<(), Error> {
    if opts.retry_failed {
        return Ok(());
    }
    match is_failed(common, store_path)? {
        None => Ok(()),
        Some(f) => Err(Error::new(
            Exit::SkippedFailed,
            format!(
                "{store_path} ({}) failed activation at {} ({}); skipped. Publish a fixed release, or run again with --retry-failed to try it anyway",
                f.reference,
                format_time(f.time),
                f.result
            ),
        )),
    }
}

/// Held while an apply or rollback runs; the flock is released on drop.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// Take the exclusive lock on `<state dir>/lock`, or fail at once with
/// AlreadyRunning.
pub fn lock(common: &Common) -> Result<StateLock, Error> {
    let dir = &common.state_dir;
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create state directory", dir, &e))?;
    let path = dir.join("lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io("open lock file", &path, &e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = (&file).take(32).read_to_string(&mut holder);
            let holder = holder.trim();
            let pid = if holder.bytes().all(|b| b.is_ascii_digit()) && !holder.is_empty() {
                format!(" by pid {holder}")
            } else {
                String::new()
            };
            return Err(Error::new(
                Exit::AlreadyRunning,
                format!(
                    "another fh-lite apply or rollback is running: {} is locked{pid}",
                    path.display()
                ),
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", &path, &e)),
    }
    // The holder's pid, for the message above (best effort).
    let _ = file.set_len(0);
    let _ = writeln!(file, "{}", std::process::id());
    Ok(StateLock { _file: file })
}

/// `YYYY-MM-DD HH:MM:SS UTC` from unix seconds.
pub fn format_time(t: u64) -> String {
    let days = t / 86400;
    let secs = t % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[derive(Serialize)]
struct StatusJson {
    profile: String,
    generation: Option<u64>,
    generation_path: Option<String>,
    generations: Vec<u64>,
    current_system: Option<String>,
    last_attempt: Option<Record>,
    last_success: Option<Record>,
    failed: Vec<FailedPath>,
    /// The device token file in use (never the token), if one is found.
    token_file: Option<String>,
    /// Its JWT `exp`, unix seconds, when it is a JWT.
    token_expires_at: Option<i64>,
}

fn record_line(r: &Record) -> String {
    let generation = r
        .generation
        .map_or(String::new(), |g| format!(", generation {g}"));
    let exit = r
        .exit_code
        .map_or(String::new(), |c| format!(" (exit {c})"));
    format!(
        "{}: {} -> {}{generation}: {}{exit}, {} ms, {} bytes downloaded",
        format_time(r.time),
        r.reference,
        r.store_path,
        r.result,
        r.duration_ms,
        r.bytes_downloaded
    )
}

/// `fh-lite status [--json]`.
pub fn cmd_status(common: &Common) -> Result<Exit, Error> {
    let out = status_text(common)?;
    crate::print_stdout(&out);
    Ok(Exit::Success)
}

fn status_text(common: &Common) -> Result<String, Error> {
    let profile = crate::activate::profiles::Profile::new(&common.profile, common.root.as_deref());
    let generations: Vec<u64> = profile.generations()?.iter().map(|g| g.number).collect();
    let current = profile.current_target()?;
    let run = match &common.root {
        Some(r) => r.join("run/current-system"),
        None => PathBuf::from("/run/current-system"),
    };
    let current_system = std::fs::read_link(&run)
        .ok()
        .map(|t| t.to_string_lossy().into_owned());
    let state = load(common)?;
    // Which device token would be used, and when it expires; never the token.
    let token = crate::flakehub::token_info(common);
    if common.json {
        let j = StatusJson {
            profile: common.profile.display().to_string(),
            generation: current.as_ref().map(|g| g.number),
            generation_path: current.as_ref().map(|g| g.target.clone()),
            generations,
            current_system,
            last_attempt: state.last_attempt,
            last_success: state.last_success,
            failed: state.failed,
            token_file: token.as_ref().ok().map(|t| t.path.display().to_string()),
            token_expires_at: token.as_ref().ok().and_then(|t| t.expires_at),
        };
        return Ok(json::to_string(&j) + "\n");
    }
    let mut s = String::new();
    let mut line = |k: &str, v: &str| s.push_str(&format!("{k:<15} {v}\n"));
    line("profile", &common.profile.display().to_string());
    line(
        "generation",
        &match &current {
            Some(g) => format!("{} -> {}", g.number, g.target),
            None => "none (the profile does not exist)".to_string(),
        },
    );
    line(
        "generations",
        &if generations.is_empty() {
            "none".to_string()
        } else {
            generations
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        },
    );
    line(
        "current system",
        &match &current_system {
            Some(t) => format!("{t} ({})", run.display()),
            None => format!("unknown ({} does not exist)", run.display()),
        },
    );
    line(
        "last attempt",
        &state
            .last_attempt
            .as_ref()
            .map_or("none".to_string(), record_line),
    );
    line(
        "last success",
        &state
            .last_success
            .as_ref()
            .map_or("none".to_string(), record_line),
    );
    if state.failed.is_empty() {
        line("failed paths", "none");
    } else {
        for (i, f) in state.failed.iter().enumerate() {
            line(
                if i == 0 { "failed paths" } else { "" },
                &format!(
                    "{} ({}, {} at {})",
                    f.store_path,
                    f.reference,
                    f.result,
                    format_time(f.time)
                ),
            );
        }
    }
    line(
        "token file",
        &match &token {
            Ok(t) => match t.expires_at {
                Some(exp) => format!(
                    "{} (expires {}{})",
                    t.path.display(),
                    format_time(u64::try_from(exp).unwrap_or(0)),
                    if exp < unix_now() as i64 {
                        ", EXPIRED"
                    } else {
                        ""
                    }
                ),
                None => format!("{} (no expiry: not a JWT)", t.path.display()),
            },
            Err(e) => format!("none usable: {e}"),
        },
    );
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{common, TempDir};

    const P: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-a";

    #[test]
    fn failed_path_is_skipped_until_retry_or_success() {
        let t = TempDir::new("state-failed");
        let c = common(t.path());
        let mut opts =
            crate::testutil::opts(crate::cli::ApplyKind::Nixos, crate::cli::Action::Switch);
        let a = Attempt::start("org/proj/=0.1.2#x", P);
        record_attempt(&c, &a).unwrap();
        assert_eq!(load(&c).unwrap().last_attempt.unwrap().result, "running");
        let failed = Report {
            generation: Some(3),
            path_failed: true,
            ..Report::default()
        };
        record_result(&c, &a, Exit::RolledBack, &failed).unwrap();
        let s = load(&c).unwrap();
        let last = s.last_attempt.unwrap();
        assert_eq!(
            (last.result.as_str(), last.exit_code, last.generation),
            ("rolled-back", Some(32), Some(3))
        );
        assert_eq!(s.last_success, None);
        let e = check_not_failed(&c, &opts, P).unwrap_err();
        assert_eq!(e.exit, Exit::SkippedFailed);
        assert!(
            e.message
                .starts_with(&format!("{P} (org/proj/=0.1.2#x) failed activation at ")),
            "{}",
            e.message
        );
        assert!(
            e.message.ends_with(" (rolled-back); skipped. Publish a fixed release, or run again with --retry-failed to try it anyway"),
            "{}",
            e.message
        );
        opts.retry_failed = true;
        check_not_failed(&c, &opts, P).unwrap();
        // A later success clears it.
        record_result(&c, &a, Exit::Success, &Report::default()).unwrap();
        let s = load(&c).unwrap();
        assert!(s.failed.is_empty());
        assert_eq!(s.last_success.unwrap().result, "success");
        mark_failed(&c, P, "r", Exit::ActivationFailed).unwrap();
        assert_eq!(
            is_failed(&c, P).unwrap().unwrap().result,
            "activation-failed"
        );
    }

    #[test]
    fn state_file_is_json_written_atomically() {
        let t = TempDir::new("state-json");
        let c = common(t.path());
        let mut a = Attempt::start("org/proj/0.1", P);
        a.bytes_downloaded = 1234;
        record_result(&c, &a, Exit::Success, &Report::default()).unwrap();
        let text = std::fs::read_to_string(c.state_dir.join("state.json")).unwrap();
        assert!(text.starts_with("{\"version\":1,\"last_attempt\":{\"reference\":\"org/proj/0.1\",\"store_path\":\"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-a\",\"generation\":null,"), "{text}");
        assert!(
            text.contains("\"result\":\"success\",\"exit_code\":0,"),
            "{text}"
        );
        assert!(text.contains("\"bytes_downloaded\":1234}"), "{text}");
        // Only state.json (and no temporary file) in the directory.
        let names: Vec<String> = std::fs::read_dir(&c.state_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn corrupt_state_is_reported_by_status_and_moved_aside_by_writers() {
        let t = TempDir::new("state-corrupt");
        let c = common(t.path());
        std::fs::create_dir_all(&c.state_dir).unwrap();
        let file = c.state_dir.join("state.json");
        std::fs::write(&file, "{not json").unwrap();
        let e = load(&c).unwrap_err();
        assert_eq!(
            e.message,
            format!(
                "state file {}: not valid fh-lite state JSON; the next apply moves it aside, or delete it",
                file.display()
            )
        );
        mark_failed(&c, P, "r", Exit::RolledBack).unwrap();
        assert_eq!(load(&c).unwrap().failed.len(), 1);
        let aside: Vec<String> = std::fs::read_dir(&c.state_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("state.json.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
    }

    #[test]
    fn second_lock_is_refused_while_the_first_is_held() {
        let t = TempDir::new("state-lock");
        let c = common(t.path());
        let held = lock(&c).unwrap();
        let e = lock(&c).unwrap_err();
        assert_eq!(e.exit, Exit::AlreadyRunning);
        assert_eq!(
            e.message,
            format!(
                "another fh-lite apply or rollback is running: {} is locked by pid {}",
                c.state_dir.join("lock").display(),
                std::process::id()
            )
        );
        drop(held);
        lock(&c).unwrap();
    }

    #[test]
    fn times_are_formatted_in_utc() {
        let cases = [
            ("epoch", 0, "1970-01-01 00:00:00 UTC"),
            ("leap day", 951_782_400, "2000-02-29 00:00:00 UTC"),
            ("recent", 1_700_000_000, "2023-11-14 22:13:20 UTC"),
        ];
        for (name, t, want) in cases {
            assert_eq!(format_time(t), want, "{name}");
        }
    }

    /// The token line depends on the test process's environment (HOME,
    /// /nix/var/determinate/token); black-box tests cover it.
    fn without_token_line(s: String) -> String {
        s.lines()
            .filter(|l| !l.starts_with("token file"))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    #[test]
    fn status_shows_generation_running_system_and_history() {
        let t = TempDir::new("state-status");
        let root = t.path();
        let c = common(root);
        assert_eq!(
            without_token_line(status_text(&c).unwrap()),
            format!(
                "profile         {}\ngeneration      none (the profile does not exist)\ngenerations     none\ncurrent system  unknown ({}/run/current-system does not exist)\nlast attempt    none\nlast success    none\nfailed paths    none\n",
                c.profile.display(),
                root.display()
            )
        );
        let p = crate::activate::profiles::Profile::new(&c.profile, Some(root));
        p.create_generation(P).unwrap();
        p.switch_to(1).unwrap();
        std::fs::create_dir_all(root.join("run")).unwrap();
        std::os::unix::fs::symlink(P, root.join("run/current-system")).unwrap();
        mark_failed(
            &c,
            "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b",
            "org/p/1",
            Exit::RolledBack,
        )
        .unwrap();
        let text = without_token_line(status_text(&c).unwrap());
        assert!(text.contains(&format!("\ngeneration      1 -> {P}\ngenerations     1\ncurrent system  {P} ({}/run/current-system)\n", root.display())), "{text}");
        assert!(text.contains("failed paths    /nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b (org/p/1, rolled-back at "), "{text}");
        let mut cj = c.clone();
        cj.json = true;
        let j = status_text(&cj).unwrap();
        assert!(j.contains(&format!("\"generation\":1,\"generation_path\":\"{P}\",\"generations\":[1],\"current_system\":\"{P}\",\"last_attempt\":null,")), "{j}");
    }
}

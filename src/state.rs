//! State kept between runs, in `<state dir>/state.json` (default
//! /var/lib/fh-lite, under `--root DIR` when given), and the apply lock.
//!
//! ```text
//! { "version": 1,
//!   "last_attempt": Record | null, "last_success": Record | null,
//!   "failed": [ { "store_path", "reference", "time", "result" } … ],
//!   "pending": Pending | null,
//!   "fleet": { "reboot": Pending | null,
//!              "rollout": [ { "store_path", "reference", "first_seen",
//!                             "activate_at" } … ] } | null,
//!   "hold": { "generation", "store_path", "time" } | null,
//!   "last_check": unix seconds | null,
//!   "trial_boot": TrialBoot | null, "last_trial_boot": TrialOutcome | null }
//! TrialBoot = the journal of a trial boot (boot/mod.rs, docs/journal.md):
//!   { "reference", "store_path", "phase", "generation",
//!     "previous_generation", "previous_system", "loader", "entry",
//!     "pinned", "conf_default", "efivars", "firmware_dir", "health_check",
//!     "health_timeout", "activation_timeout", "install_bootloader",
//!     "reboot_requested", "failure", "boot_id", "time" }
//! TrialOutcome = { "reference", "store_path", "generation", "result":
//!   "committed" | "did-not-boot" | "health-check-failed" | "undone",
//!   "reason", "time" }
//! Record = { "reference", "store_path", "generation": u64|null,
//!            "time": unix seconds (start), "result": "running" | class,
//!            "exit_code": u8|null, "duration_ms", "bytes_downloaded" }
//!
//! Pending = the unfinished attempt (the journal; docs/journal.md):
//!   { "reference", "store_path", "action", "trial", "phase",
//!     "generation", "previous_generation", "previous_system", "time",
//!     "pid", and how to redo it: "kind", "install_bootloader",
//!     "rollback_on", "no_rollback", "health_check", "health_timeout",
//!     "activation_timeout", "running": Running | null, and "rebooting":
//!     true when it waits for a reboot's confirmation, else null }
//! Running = the script it runs now (activate/orphan.rs):
//!   { "program", "pgid", "start_ticks", "since", "boot_id" }
//! ```
//!
//! - The command writes each [`Phase`] before its step starts; the write
//!   that records how the attempt ended also clears `pending`. A state
//!   file from before the journal (no `pending`) loads as "none pending".
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
//!   `<state dir>/lock` ([`StateDir::lock`]); a second run stops at once
//!   with `AlreadyRunning`, naming the lock file and the holder's pid.
//!
//! Persistence and the lock only: the commands (apply, rollback) take the
//! lock and decide what is recorded; this module knows no pipeline step.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use miniserde::{json, Deserialize, Serialize};

use crate::error::{Error, Exit};
use crate::nix::store_path::StorePath;
use crate::rootfs::{self, Dir};
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
    /// With `--mirror`: what each source delivered (cache/mirror.rs).
    pub bytes_by_source: Option<Vec<SourceBytes>>,
    pub bytes_downloaded: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceBytes {
    pub source: String,
    pub bytes: u64,
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
    /// The attempt in progress, or the one a kill interrupted.
    pub pending: Option<Pending>,
    /// Fleet options' memory (fleet/mod.rs): reboot need, rollout schedule.
    pub fleet: Option<FleetState>,
    /// `fh-lite hold`: the device stays on its release until `unhold`.
    pub hold: Option<Hold>,
    /// Unix seconds: when an apply last got an answer from its source
    /// (FlakeHub, a cache, a bundle), even if there was nothing to do.
    pub last_check: Option<u64>,
    /// The trial boot in progress (boot/mod.rs), or null.
    pub trial_boot: Option<crate::boot::record::TrialBoot>,
    /// How the last trial boot ended, or null.
    pub last_trial_boot: Option<crate::boot::record::TrialOutcome>,
}

/// What `fh-lite hold` recorded: the system the device is held on.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Hold {
    /// The profile's generation and its store path when held (null: no
    /// profile yet).
    pub generation: Option<u64>,
    pub store_path: Option<String>,
    /// Unix seconds.
    pub time: u64,
}

/// The `result` of a failed-list entry written by `fh-lite rollback` for
/// the system it rolled away from (the operator's decision, not a failed
/// activation).
pub const ROLLED_AWAY: &str = "rolled-away";

/// What `--reboot` and `--rollout-spread` remember between runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetState {
    /// The applied attempt that needs a reboot (its journal entry, kept to
    /// confirm it with the health check after the reboot), or null.
    pub reboot: Option<Pending>,
    /// When each newly seen store path activates (newest last, bounded).
    pub rollout: Vec<Scheduled>,
}

/// A store path held back by `--rollout-spread`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Scheduled {
    pub store_path: String,
    pub reference: String,
    /// Unix seconds: when a run first saw it, and when it may activate.
    pub first_seen: u64,
    pub activate_at: u64,
}

/// Where an attempt is: written before the step it names starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Resolved; plan, fetch and register running (nothing irreversible).
    Fetching,
    /// About to create the generation and switch the profile to it.
    Profile,
    /// About to run the activation script (a trial: `test`).
    Activating,
    /// About to run the health check.
    HealthCheck,
    /// A trial passed: about to create the generation and run `boot`.
    Committing,
    /// About to restore the previous system.
    RollingBack,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Fetching,
        Phase::Profile,
        Phase::Activating,
        Phase::HealthCheck,
        Phase::Committing,
        Phase::RollingBack,
    ];

    /// The word in state.json.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Fetching => "fetching",
            Phase::Profile => "profile",
            Phase::Activating => "activating",
            Phase::HealthCheck => "health-check",
            Phase::Committing => "committing",
            Phase::RollingBack => "rolling-back",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// The journal entry of an unfinished attempt (see the module text).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    pub reference: String,
    pub store_path: String,
    /// "switch", "boot", "test" or "dry-activate"; or [`ROLLBACK_ACTION`]:
    /// `fh-lite rollback` switching to generation `generation`.
    pub action: String,
    pub trial: bool,
    /// A [`Phase`] word.
    pub phase: String,
    /// The generation it gets / got (switch, boot, a committed trial).
    pub generation: Option<u64>,
    /// The profile's generation before the attempt.
    pub previous_generation: Option<u64>,
    /// `/run/current-system` before the attempt (under `--root`).
    pub previous_system: Option<String>,
    pub time: u64,
    pub pid: u32,
    /// "nixos", "nix-darwin" or "home-manager".
    pub kind: String,
    pub install_bootloader: bool,
    pub rollback_on: Vec<i32>,
    pub no_rollback: bool,
    pub health_check: Option<String>,
    /// Seconds.
    pub health_timeout: u64,
    /// Seconds; null: no limit.
    pub activation_timeout: Option<u64>,
    /// The activation (or rollback) script running now, set while it runs:
    /// if fh-lite dies, the script may live on (it has a process group of
    /// its own), and recovery must not start another beside it.
    pub running: Option<Running>,
    /// fh-lite rebooted into it (`--reboot if-needed`): the next run
    /// confirms it with the health check (fleet/mod.rs).
    /// (An option: state files from before it lack the field.)
    pub rebooting: Option<bool>,
}

/// A script an attempt started (activate/orphan.rs).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Running {
    /// The script and its arguments, for messages.
    pub program: String,
    /// Its process group; it leads it, so this is also its pid.
    pub pgid: u32,
    /// Its start time in clock ticks after boot (/proc/PID/stat, field
    /// 22): tells it from a later process that got the same id.
    pub start_ticks: u64,
    /// Unix seconds when it started; `--activation-timeout` counts from it.
    pub since: u64,
    /// The boot it ran in (/proc/sys/kernel/random/boot_id): start ticks
    /// compare within one boot only. (An option: state files from before
    /// it lack the field.)
    pub boot_id: Option<String>,
}

/// The `action` of a journal entry written by `fh-lite rollback`.
pub const ROLLBACK_ACTION: &str = "rollback";

impl Pending {
    /// Its phase (an unknown word reads as "activating": redo the whole
    /// activation, the safe choice).
    pub fn phase(&self) -> Phase {
        Phase::parse(&self.phase).unwrap_or(Phase::Activating)
    }
}

/// One apply (or rollback) in progress; made by the command when the store
/// path is known, finished with [`StateDir::record_result`].
#[derive(Clone, Debug)]
pub struct Attempt {
    pub reference: String,
    pub store_path: StorePath,
    /// Set by the caller after the fetch step.
    pub bytes_downloaded: u64,
    time: u64,
    started: Instant,
}

impl Attempt {
    pub fn start(reference: &str, store_path: &StorePath) -> Attempt {
        Attempt {
            reference: reference.to_string(),
            store_path: store_path.clone(),
            bytes_downloaded: 0,
            time: unix_now(),
            started: Instant::now(),
        }
    }

    /// The attempt a pending journal entry describes (recovery), keeping
    /// its start time.
    pub fn resumed(reference: &str, store_path: &StorePath, time: u64) -> Attempt {
        Attempt {
            time,
            ..Attempt::start(reference, store_path)
        }
    }

    /// Its start time, unix seconds.
    pub fn time(&self) -> u64 {
        self.time
    }

    fn record(&self, exit: Option<Exit>, generation: Option<u64>) -> Record {
        Record {
            reference: self.reference.clone(),
            store_path: self.store_path.to_string(),
            generation,
            time: self.time,
            result: exit.map_or("running", Exit::name).to_string(),
            exit_code: exit.map(Exit::code),
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            bytes_by_source: BYTES_BY_SOURCE.get().map(|tally| {
                (tally().into_iter())
                    .map(|(source, bytes)| SourceBytes { source, bytes })
                    .collect()
            }),
            bytes_downloaded: self.bytes_downloaded,
        }
    }
}

/// Where the records of this run read the bytes each source delivered
/// (set with `--mirror`: [`count_bytes_by_source`]).
static BYTES_BY_SOURCE: std::sync::OnceLock<Tally> = std::sync::OnceLock::new();

/// Bytes per source, in order: (URL, bytes).
pub type Tally = fn() -> Vec<(String, u64)>;

/// From now on, every record of this run carries `bytes_by_source` as
/// `tally` reports it (the cache layer's counters, when there are mirrors).
pub fn count_bytes_by_source(tally: Tally) {
    let _ = BYTES_BY_SOURCE.set(tally);
}

enum Loaded {
    Missing,
    Ok(Box<State>),
    Corrupt(String),
}

fn read_state(dir: &StateDir) -> Result<Loaded, Error> {
    let path = &dir.file();
    let file = match dir.open().and_then(|d| d.open_read(STATE_FILE)) {
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

const STATE_FILE: &str = "state.json";

/// state.json (it holds the health-check command), versions.json and the
/// lock: root's alone, so nobody else can read the journal or hold the
/// lock.
const STATE_MODE: u32 = 0o600;

/// The files fh-lite keeps in its state directory (and their temporary
/// names): a directory holding only these is made 0700.
const OWN_FILES: [&str; 3] = [STATE_FILE, "lock", "versions.json"];

/// Make the state directory 0700 when it is fh-lite's own: owned by this
/// user, not sticky, and holding nothing but fh-lite's files (an explicit
/// `--state-dir` pointing at a shared directory is left as it is).
fn private(d: &Dir) -> std::io::Result<()> {
    let st = d.fstat()?;
    if st.st_mode & 0o7777 == 0o700
        || st.st_uid != rustix::process::geteuid().as_raw()
        || st.st_mode & 0o1000 != 0
    {
        return Ok(());
    }
    let own = d.entries()?.iter().all(|n| {
        let n = n.to_string_lossy();
        n.starts_with('.') || OWN_FILES.iter().any(|f| n.starts_with(f))
    });
    if own {
        d.set_mode(0o700)?;
    }
    Ok(())
}

/// Remove the temporary files of state.json and versions.json left by
/// runs that died (their pid is gone, or they were made in an earlier boot:
/// [`rootfs::left_by_dead_run`]).
fn sweep_dead_temps(d: &Dir) {
    let Ok(names) = d.entries() else { return };
    let this_boot = rootfs::boot_tag();
    for n in names {
        for own in [STATE_FILE, "versions.json"] {
            if let Some((pid, rand)) = rootfs::temp_name_parts(&n, own.as_ref(), "tmp") {
                if rootfs::left_by_dead_run(pid, rand, this_boot) {
                    let _ = d.remove_file(&n);
                }
            }
        }
    }
}

/// The state directory (`--state-dir`): state.json and the lock. Under
/// `--root DIR` it is resolved beneath DIR and its files are never
/// followed when symlinks ([`crate::rootfs`]).
pub struct StateDir {
    dir: PathBuf,
    root: Option<PathBuf>,
}

impl StateDir {
    /// `dir` as it is (tests).
    #[cfg(test)]
    pub fn new(dir: &std::path::Path) -> StateDir {
        StateDir {
            dir: dir.to_path_buf(),
            root: None,
        }
    }

    /// The state directory `dir` (`--state-dir`), beneath `root`
    /// (`--root`).
    pub fn under(root: Option<&Path>, dir: &Path) -> StateDir {
        StateDir {
            dir: dir.to_path_buf(),
            root: root.map(Path::to_path_buf),
        }
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// `name` in the state directory (for messages).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn open(&self) -> std::io::Result<Dir> {
        rootfs::open_dir(self.root.as_deref(), &self.dir)
    }

    fn create(&self) -> Result<Dir, Error> {
        let d = rootfs::create_dir_all(self.root.as_deref(), &self.dir)
            .map_err(|e| Error::io("create state directory", &self.dir, &e))?;
        private(&d).map_err(|e| Error::io("make the state directory private", &self.dir, &e))?;
        Ok(d)
    }

    /// The file `name` in the state directory, read whole up to `max`
    /// bytes (None when missing); never through a symlink under `--root`.
    pub fn read_file(&self, name: &str, max: u64) -> Result<Option<String>, Error> {
        let path = self.dir.join(name);
        let file = match self.open().and_then(|d| d.open_read(name)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", &path, &e)),
        };
        let mut text = String::new();
        file.take(max + 1)
            .read_to_string(&mut text)
            .map_err(|e| Error::io("read", &path, &e))?;
        if text.len() as u64 > max {
            return Err(Error::io(
                "read",
                &path,
                &std::io::Error::other(format!("larger than {max} bytes")),
            ));
        }
        Ok(Some(text))
    }

    /// Replace the file `name` in the state directory with `data` (0600),
    /// crash-safely ([`Dir::write_atomic`]).
    pub fn write_file(&self, name: &str, data: &[u8]) -> Result<(), Error> {
        let dir = self.create()?;
        dir.write_atomic(name, STATE_MODE, data)
            .map_err(|e| Error::io("write", &self.dir.join(name), &e))
    }

    /// For `status`: a corrupt file is an error naming it.
    pub fn load(&self) -> Result<State, Error> {
        let path = self.file();
        match read_state(self)? {
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
    fn load_for_update(&self) -> Result<State, Error> {
        let path = self.file();
        match read_state(self)? {
            Loaded::Missing => Ok(<State as Default>::default()),
            Loaded::Ok(s) => Ok(*s),
            Loaded::Corrupt(why) => {
                let aside_name = format!("state.json.corrupt-{}", unix_now());
                let aside = self.dir.join(&aside_name);
                self.open()
                    .and_then(|d| d.rename(STATE_FILE, &aside_name))
                    .map_err(|e| Error::io("move corrupt state file aside to", &aside, &e))?;
                crate::ui::warn(&format!(
                    "state file {}: {why}; moved aside to {}, starting afresh",
                    path.display(),
                    aside.display()
                ));
                Ok(<State as Default>::default())
            }
        }
    }

    /// Write state.json atomically (temp + fsync + rename + fsync dir).
    fn save(&self, state: &State) -> Result<(), Error> {
        let dir = self.create()?;
        let path = self.file();
        let mut s = State {
            version: 1,
            ..state.clone()
        };
        if s.failed.len() > MAX_FAILED {
            let drop = s.failed.len() - MAX_FAILED;
            s.failed.drain(..drop);
        }
        let text = json::to_string(&s) + "\n";
        dir.write_atomic(STATE_FILE, STATE_MODE, text.as_bytes())
            .map_err(|e| Error::io("write state file", &path, &e))
    }

    fn update(&self, f: impl FnOnce(&mut State)) -> Result<(), Error> {
        let mut s = self.load_for_update()?;
        f(&mut s);
        self.save(&s)
    }

    /// Record that an attempt started ("running" until [`Self::record_result`]),
    /// so a crash mid-activation is visible in `status`.
    #[cfg(test)]
    pub fn record_attempt(&self, attempt: &Attempt) -> Result<(), Error> {
        self.update(|s| s.last_attempt = Some(attempt.record(None, None)))
    }

    /// Read-modify-write the fleet memory and the journal entry in one
    /// atomic write (fleet/mod.rs).
    pub fn update_fleet(
        &self,
        f: impl FnOnce(&mut FleetState, &mut Option<Pending>),
    ) -> Result<(), Error> {
        self.update(|s| {
            let mut fleet = s.fleet.take().unwrap_or_default();
            f(&mut fleet, &mut s.pending);
            s.fleet = Some(fleet);
        })
    }

    /// The fleet memory (writers' view: a corrupt file is moved aside).
    pub fn fleet(&self) -> Result<FleetState, Error> {
        Ok(self.load_for_update()?.fleet.unwrap_or_default())
    }

    /// Record that a `fh-lite rollback` started, in one write: the attempt,
    /// its journal entry, and the operator's decision: `rolled_away`
    /// (store path, reference) joins the failed list as [`ROLLED_AWAY`] so
    /// the next apply of it is skipped, and a reboot need recorded for
    /// another system than `pending`'s is dropped. A hold moves with it.
    pub fn begin_rollback(
        &self,
        attempt: &Attempt,
        pending: &Pending,
        rolled_away: Option<(&str, &str)>,
    ) -> Result<(), Error> {
        self.update(|s| {
            s.last_attempt = Some(attempt.record(None, None));
            s.pending = Some(pending.clone());
            if let Some((path, reference)) = rolled_away {
                if path != pending.store_path {
                    push_failed_as(s, path, reference, ROLLED_AWAY);
                }
            }
            if let Some(f) = s.fleet.as_mut() {
                if f.reboot
                    .as_ref()
                    .is_some_and(|r| r.store_path != pending.store_path)
                {
                    f.reboot = None;
                }
            }
            if let Some(h) = s.hold.as_mut() {
                h.generation = pending.generation;
                h.store_path = Some(pending.store_path.clone());
            }
        })
    }

    /// The state as writers see it (a corrupt file is moved aside).
    pub fn current(&self) -> Result<State, Error> {
        self.load_for_update()
    }

    /// Record that an apply resolved its reference at `time`.
    pub fn checked(&self, time: u64) -> Result<(), Error> {
        self.update(|s| s.last_check = Some(time))
    }

    /// Set (Some) or release (None) the hold.
    pub fn set_hold(&self, hold: Option<Hold>) -> Result<(), Error> {
        self.update(|s| s.hold = hold)
    }

    /// Record that an attempt started ("running") and its journal entry,
    /// in one write.
    pub fn begin(&self, attempt: &Attempt, pending: &Pending) -> Result<(), Error> {
        self.update(|s| {
            s.last_attempt = Some(attempt.record(None, None));
            s.pending = Some(pending.clone());
        })
    }

    /// Write the journal entry (a new phase), before its step starts.
    pub fn set_pending(&self, pending: &Pending) -> Result<(), Error> {
        self.update(|s| s.pending = Some(pending.clone()))
    }

    /// Record (or, with None, clear) the script the pending attempt runs
    /// now, if the pending attempt is this process's.
    pub fn set_running(&self, running: Option<Running>) -> Result<(), Error> {
        let me = std::process::id();
        match self.pending()? {
            Some(p) if p.pid == me && p.running != running => self.update(|s| {
                if let Some(p) = s.pending.as_mut() {
                    p.running = running;
                }
            }),
            _ => Ok(()),
        }
    }

    /// The unfinished attempt, if any.
    pub fn pending(&self) -> Result<Option<Pending>, Error> {
        Ok(self.load_for_update()?.pending)
    }

    /// Record how an attempt ended: always the last attempt; on Success or
    /// RebootNeeded also the last success (and the path is no longer failed);
    /// when `path_failed`, the path joins the failed list. The journal entry
    /// is cleared in the same write.
    pub fn record_result(
        &self,
        attempt: &Attempt,
        exit: Exit,
        generation: Option<u64>,
        path_failed: bool,
    ) -> Result<(), Error> {
        let rec = attempt.record(Some(exit), generation);
        let path = attempt.store_path.to_string();
        self.update(|s| {
            if matches!(exit, Exit::Success | Exit::RebootNeeded) {
                s.last_success = Some(rec.clone());
                s.failed.retain(|f| f.store_path != path);
            }
            if path_failed {
                push_failed(s, &path, &attempt.reference, exit);
            }
            s.last_attempt = Some(rec);
            s.pending = None;
        })
    }

    /// Remember that `store_path` failed activation (tests; `record_result`
    /// does it for an apply).
    #[cfg(test)]
    pub fn mark_failed(&self, store_path: &str, reference: &str, exit: Exit) -> Result<(), Error> {
        self.update(|s| push_failed(s, store_path, reference, exit))
    }

    /// Every path remembered as failed (writers' view).
    pub fn failed(&self) -> Result<Vec<FailedPath>, Error> {
        Ok(self.load_for_update()?.failed)
    }

    /// The failed-list entry for `store_path`, if it failed before.
    pub fn failed_entry(&self, store_path: &StorePath) -> Result<Option<FailedPath>, Error> {
        let path = store_path.to_string();
        let s = self.load_for_update()?;
        Ok(s.failed.into_iter().find(|f| f.store_path == path))
    }

    /// The journaled trial boot, if any (writers' view).
    pub fn trial_boot(&self) -> Result<Option<crate::boot::record::TrialBoot>, Error> {
        Ok(self.load_for_update()?.trial_boot)
    }

    /// Write (or clear) the trial boot's journal entry.
    pub fn set_trial_boot(&self, t: Option<&crate::boot::record::TrialBoot>) -> Result<(), Error> {
        self.update(|s| s.trial_boot = t.cloned())
    }

    /// An apply hands its attempt over to a trial boot: the trial boot's
    /// journal entry replaces the attempt's (`pending`) in one write, so
    /// recovery never redoes a step of it.
    pub fn begin_trial_boot(&self, t: &crate::boot::record::TrialBoot) -> Result<(), Error> {
        self.update(|s| {
            s.trial_boot = Some(t.clone());
            s.pending = None;
        })
    }

    /// A trial boot ended: its outcome recorded, its journal entry cleared,
    /// and (`failed`) the path listed as failed, or (committed) no longer
    /// failed, in one write. The apply that armed it, if it died before
    /// it recorded its result (a power cut inside the trial), is still
    /// `running` in `last_attempt`: it gets the outcome's result (an undo
    /// reads "interrupted"). Settling runs under the lock before any new
    /// attempt is recorded, so that record is never a live one.
    pub fn end_trial_boot(
        &self,
        outcome: &crate::boot::record::TrialOutcome,
        failed: Option<Exit>,
    ) -> Result<(), Error> {
        self.update(|s| {
            if let Some(a) = s.last_attempt.as_mut().filter(|a| {
                a.result == "running" && a.exit_code.is_none() && a.store_path == outcome.store_path
            }) {
                let exit = match (failed, outcome.result.as_str()) {
                    (Some(e), _) => e,
                    (None, "committed") => Exit::Success,
                    (None, _) => Exit::Interrupted,
                };
                a.result = exit.name().to_string();
                a.exit_code = Some(exit.code());
                a.generation = a.generation.or(outcome.generation);
            }
            match failed {
                Some(exit) => push_failed(s, &outcome.store_path, &outcome.reference, exit),
                None if outcome.result == "committed" => {
                    s.failed.retain(|f| f.store_path != outcome.store_path)
                }
                None => {}
            }
            s.trial_boot = None;
            s.last_trial_boot = Some(outcome.clone());
        })
    }

    /// Take the exclusive lock on `<state dir>/lock`, or fail at once with
    /// AlreadyRunning.
    pub fn lock(&self) -> Result<StateLock, Error> {
        let dir = self.create()?;
        let path = self.dir.join("lock");
        let mut file = dir
            .open_lock("lock", STATE_MODE)
            .map_err(|e| Error::io("open lock file", &path, &e))?;
        // state.json made by an older version with a looser mode.
        if let Ok(f) = dir.open_read(STATE_FILE) {
            let _ = f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(STATE_MODE));
        }
        sweep_dead_temps(&dir);
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
}

fn push_failed(s: &mut State, store_path: &str, reference: &str, exit: Exit) {
    push_failed_as(s, store_path, reference, exit.name())
}

fn push_failed_as(s: &mut State, store_path: &str, reference: &str, result: &str) {
    s.failed.retain(|f| f.store_path != store_path);
    s.failed.push(FailedPath {
        store_path: store_path.to_string(),
        reference: reference.to_string(),
        time: unix_now(),
        result: result.to_string(),
    });
}

/// Held while an apply or rollback runs; the flock is released on drop.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    const P: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-a";

    fn dir(t: &TempDir) -> StateDir {
        StateDir::new(&t.path().join("var/lib/fh-lite"))
    }

    fn sp() -> StorePath {
        StorePath::parse(P).unwrap()
    }

    /// An apply cut inside its trial boot stays `running` until the
    /// trial is settled; then it reads as the trial ended.
    #[test]
    fn a_trial_apply_cut_before_its_result_gets_the_trials_outcome() {
        let t = TempDir::new("state-trial-cut");
        let d = dir(&t);
        for (result, failed, want) in [
            ("undone", None, ("interrupted", 42)),
            ("did-not-boot", Some(Exit::DidNotBoot), ("did-not-boot", 36)),
            ("committed", None, ("success", 0)),
        ] {
            let a = Attempt::start("org/proj/=0.1.2#x", &sp());
            d.record_attempt(&a).unwrap();
            let outcome = crate::boot::record::TrialOutcome {
                store_path: P.to_string(),
                generation: Some(4),
                result: result.to_string(),
                ..Default::default()
            };
            d.end_trial_boot(&outcome, failed).unwrap();
            let last = d.load().unwrap().last_attempt.unwrap();
            assert_eq!(
                (last.result.as_str(), last.exit_code, last.generation),
                (want.0, Some(want.1), Some(4)),
                "{result}"
            );
        }
        // A finished attempt, or another path's, is left as it is.
        let a = Attempt::start("org/proj/=0.1.2#x", &sp());
        d.record_result(&a, Exit::RebootNeeded, Some(4), false)
            .unwrap();
        let outcome = crate::boot::record::TrialOutcome {
            store_path: P.to_string(),
            result: "undone".to_string(),
            ..Default::default()
        };
        d.end_trial_boot(&outcome, None).unwrap();
        assert_eq!(d.load().unwrap().last_attempt.unwrap().exit_code, Some(40));
        d.record_attempt(&a).unwrap();
        let other = crate::boot::record::TrialOutcome {
            store_path: "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b".to_string(),
            result: "undone".to_string(),
            ..Default::default()
        };
        d.end_trial_boot(&other, None).unwrap();
        assert_eq!(d.load().unwrap().last_attempt.unwrap().result, "running");
    }

    #[test]
    fn failed_path_is_remembered_until_a_success() {
        let t = TempDir::new("state-failed");
        let d = dir(&t);
        let a = Attempt::start("org/proj/=0.1.2#x", &sp());
        d.record_attempt(&a).unwrap();
        assert_eq!(d.load().unwrap().last_attempt.unwrap().result, "running");
        d.record_result(&a, Exit::RolledBack, Some(3), true)
            .unwrap();
        let s = d.load().unwrap();
        let last = s.last_attempt.unwrap();
        assert_eq!(
            (last.result.as_str(), last.exit_code, last.generation),
            ("rolled-back", Some(32), Some(3))
        );
        assert_eq!(s.last_success, None);
        let f = d.failed_entry(&sp()).unwrap().unwrap();
        assert_eq!(
            (f.reference.as_str(), f.result.as_str()),
            ("org/proj/=0.1.2#x", "rolled-back")
        );
        // A later success clears it.
        d.record_result(&a, Exit::Success, None, false).unwrap();
        let s = d.load().unwrap();
        assert!(s.failed.is_empty());
        assert_eq!(s.last_success.unwrap().result, "success");
        d.mark_failed(P, "r", Exit::ActivationFailed).unwrap();
        assert_eq!(
            d.failed_entry(&sp()).unwrap().unwrap().result,
            "activation-failed"
        );
    }

    #[test]
    fn state_file_is_json_written_atomically() {
        let t = TempDir::new("state-json");
        let d = dir(&t);
        let mut a = Attempt::start("org/proj/0.1", &sp());
        a.bytes_downloaded = 1234;
        d.record_result(&a, Exit::Success, None, false).unwrap();
        let text = std::fs::read_to_string(d.file()).unwrap();
        assert!(text.starts_with("{\"version\":1,\"last_attempt\":{\"reference\":\"org/proj/0.1\",\"store_path\":\"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-a\",\"generation\":null,"), "{text}");
        assert!(
            text.contains("\"result\":\"success\",\"exit_code\":0,"),
            "{text}"
        );
        assert!(text.contains("\"bytes_downloaded\":1234}"), "{text}");
        // Only state.json (and no temporary file) in the directory.
        let names: Vec<String> = std::fs::read_dir(&d.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn corrupt_state_is_reported_by_status_and_moved_aside_by_writers() {
        let t = TempDir::new("state-corrupt");
        let d = dir(&t);
        std::fs::create_dir_all(&d.dir).unwrap();
        let file = d.file();
        std::fs::write(&file, "{not json").unwrap();
        let e = d.load().unwrap_err();
        assert_eq!(
            e.message,
            format!(
                "state file {}: not valid fh-lite state JSON; the next apply moves it aside, or delete it",
                file.display()
            )
        );
        d.mark_failed(P, "r", Exit::RolledBack).unwrap();
        assert_eq!(d.load().unwrap().failed.len(), 1);
        let aside: Vec<String> = std::fs::read_dir(&d.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("state.json.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
    }

    #[test]
    fn second_lock_is_refused_while_the_first_is_held() {
        let t = TempDir::new("state-lock");
        let d = dir(&t);
        let held = d.lock().unwrap();
        let e = d.lock().unwrap_err();
        assert_eq!(e.exit, Exit::AlreadyRunning);
        assert_eq!(
            e.message,
            format!(
                "another fh-lite apply or rollback is running: {} is locked by pid {}",
                d.dir.join("lock").display(),
                std::process::id()
            )
        );
        drop(held);
        d.lock().unwrap();
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

    fn pending(phase: Phase) -> Pending {
        Pending {
            reference: "org/proj/=0.1.2#x".into(),
            store_path: P.into(),
            action: "switch".into(),
            trial: true,
            phase: phase.as_str().into(),
            generation: Some(4),
            previous_generation: Some(3),
            previous_system: Some("/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b".into()),
            time: 1_700_000_000,
            pid: 42,
            kind: "nixos".into(),
            install_bootloader: false,
            rollback_on: vec![1, 2, 4],
            no_rollback: false,
            health_check: Some("true".into()),
            health_timeout: 60,
            activation_timeout: Some(600),
            running: None,
            rebooting: None,
        }
    }

    #[test]
    fn phases_have_the_journal_words() {
        let words: Vec<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(
            words,
            [
                "fetching",
                "profile",
                "activating",
                "health-check",
                "committing",
                "rolling-back"
            ]
        );
        for p in Phase::ALL {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
        }
        assert_eq!(Phase::parse("activation"), None);
        let mut odd = pending(Phase::Fetching);
        odd.phase = "from-the-future".into();
        assert_eq!(
            odd.phase(),
            Phase::Activating,
            "unknown: redo the activation"
        );
    }

    #[test]
    fn pending_round_trips_and_is_cleared_with_the_result() {
        let t = TempDir::new("state-pending");
        let d = dir(&t);
        let a = Attempt::start("org/proj/=0.1.2#x", &sp());
        let mut p = pending(Phase::Fetching);
        d.begin(&a, &p).unwrap();
        assert_eq!(d.pending().unwrap(), Some(p.clone()));
        assert_eq!(d.load().unwrap().last_attempt.unwrap().result, "running");
        for phase in Phase::ALL {
            p.phase = phase.as_str().into();
            d.set_pending(&p).unwrap();
            assert_eq!(d.pending().unwrap().unwrap().phase(), phase);
        }
        let text = std::fs::read_to_string(d.file()).unwrap();
        assert!(
            text.contains(&format!("\"pending\":{{\"reference\":\"org/proj/=0.1.2#x\",\"store_path\":\"{P}\",\"action\":\"switch\",\"trial\":true,\"phase\":\"rolling-back\",\"generation\":4,\"previous_generation\":3,\"previous_system\":\"/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b\",\"time\":1700000000,\"pid\":42,")),
            "{text}"
        );
        d.record_result(&a, Exit::RolledBack, Some(4), true)
            .unwrap();
        let s = d.load().unwrap();
        assert_eq!(s.pending, None);
        assert_eq!(s.last_attempt.unwrap().result, "rolled-back");
        // An interrupted transfer: recorded as such, journal cleared.
        d.begin(&a, &pending(Phase::Fetching)).unwrap();
        d.record_result(&a, Exit::Interrupted, None, false).unwrap();
        let s = d.load().unwrap();
        assert_eq!(s.pending, None);
        assert_eq!(s.last_attempt.unwrap().result, "interrupted");
    }

    #[test]
    fn a_state_file_from_before_the_journal_still_loads() {
        let t = TempDir::new("state-old");
        let d = dir(&t);
        std::fs::create_dir_all(&d.dir).unwrap();
        let old = format!(
            "{{\"version\":1,\"last_attempt\":{{\"reference\":\"r\",\"store_path\":\"{P}\",\"generation\":1,\"time\":5,\"result\":\"success\",\"exit_code\":0,\"duration_ms\":7,\"bytes_downloaded\":9}},\"last_success\":null,\"failed\":[]}}\n"
        );
        std::fs::write(d.file(), old).unwrap();
        let s = d.load().unwrap();
        assert_eq!(s.pending, None);
        assert_eq!(s.last_attempt.unwrap().generation, Some(1));
        assert_eq!(d.pending().unwrap(), None);
        // Not moved aside as corrupt by a writer either.
        d.mark_failed(P, "r", Exit::RolledBack).unwrap();
        assert_eq!(d.load().unwrap().last_attempt.unwrap().result, "success");
    }
}

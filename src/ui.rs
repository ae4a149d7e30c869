//! Every message fh-lite writes for a person, in one place.
//!
//! - [`say`]: progress on stderr, `fh-lite: <line>`. Not written with
//!   `--quiet`, nor with `--json` (its events on stdout are the progress
//!   then). This is the one quiet rule: a line a person needs in order to
//!   act is a warning, not progress.
//! - [`warn`]: `fh-lite: warning: <line>` on stderr, always.
//! - [`error`]: `fh-lite: <message>` on stderr, always: the one error line
//!   of a failed run (`main`), and failures reported on the way that do not
//!   stop the run.
//! - [`relay`]: a line of another program's (`nix-daemon: <line>`).
//! - [`print_stdout`]: a command's result on stdout (a store path, JSON).
//!
//! The one piece of global state: whether progress is shown, set once at
//! start-up ([`set_quiet`], by `run`) and never changed afterwards. A
//! closed stdout or stderr is not an error: a message that cannot be
//! written is dropped, it never stops an activation half-way.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static QUIET: AtomicBool = AtomicBool::new(false);

/// Show progress lines ([`say`]) or not: `--quiet` or `--json`. Called
/// once, before the command runs.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// A progress line on stderr (not with `--quiet` or `--json`).
pub fn say(line: &str) {
    if !QUIET.load(Ordering::Relaxed) {
        to_stderr(&format!("fh-lite: {line}\n"));
    }
}

/// A warning on stderr: something went wrong or may go wrong, the run
/// goes on.
pub fn warn(line: &str) {
    to_stderr(&format!("fh-lite: warning: {line}\n"));
}

/// An error on stderr.
pub fn error(message: &str) {
    to_stderr(&format!("fh-lite: {message}\n"));
}

/// A line another program wrote for the user (the nix-daemon's log),
/// under that program's name.
pub fn relay(program: &str, line: &str) {
    to_stderr(&format!("{program}: {line}\n"));
}

/// Write to stdout; a closed pipe (`fh-lite --help | head`) is not an error.
pub fn print_stdout(s: &str) {
    let _ = std::io::stdout().lock().write_all(s.as_bytes());
}

fn to_stderr(s: &str) {
    // The test harness captures what the print macros write, not what goes
    // to the stderr handle; outside tests the macros would panic (and so
    // abort) on a closed stderr.
    #[cfg(test)]
    eprint!("{s}");
    #[cfg(not(test))]
    let _ = std::io::stderr().lock().write_all(s.as_bytes());
}

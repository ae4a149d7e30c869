//! SIGTERM and SIGINT: a flag, not a sudden death.
//!
//! The commands that change the system (apply, rollback, recover) call
//! [`install`] once they hold the lock. From then on a SIGTERM (systemd
//! stopping the unit) or SIGINT (Ctrl-C) only sets a flag:
//!
//! - during resolve, plan and fetch the transfer checks it between chunks
//!   ([`interrupted`]) and stops; the failed paths' temporary trees are
//!   removed as after any failed download, and the apply exits with
//!   `Exit::Interrupted` having changed nothing;
//! - during activation, the health check and a rollback nothing checks it:
//!   the step runs to its end (or is rolled back) and fh-lite exits with
//!   the normal status. A second signal changes nothing.
//!
//! Activation scripts and health checks run in process groups of their own,
//! so a terminal's Ctrl-C reaches fh-lite only.
//!
//! A read can block with no end in sight (a FIFO, a standard input that
//! never ends) and a restarted system call never looks at the flag. So a
//! watchdog thread does: when a signal arrived and activation has not
//! begun ([`activation_begins`]), it gives the run [`GRACE`] to stop by
//! itself, then ends the process with `Exit::Interrupted`. Nothing is lost
//! that way: before activation only the fetch ran, whose temporary files
//! the next run removes, and the journal (phase `fetching`) says so.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use crate::error::{Error, Exit};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static ACTIVATING: AtomicBool = AtomicBool::new(false);
static WATCHDOG: Once = Once::new();

/// How long the run has to stop by itself after a signal, before
/// activation, until the watchdog ends it.
pub const GRACE: Duration = Duration::from_secs(3);

/// Activation (or a rollback's switch) starts: from now on a signal only
/// sets the flag, and the step runs to its end.
pub fn activation_begins() {
    ACTIVATING.store(true, Ordering::SeqCst);
}

fn watchdog() {
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if !interrupted() {
            continue;
        }
        let since = Instant::now();
        while since.elapsed() < GRACE {
            if ACTIVATING.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if ACTIVATING.load(Ordering::SeqCst) {
            return;
        }
        eprintln!(
            "fh-lite: {}; a read that did not end was abandoned",
            Exit::Interrupted.meaning()
        );
        std::process::exit(i32::from(Exit::Interrupted.code()));
    }
}

/// From now on SIGTERM and SIGINT set the flag instead of ending fh-lite.
pub fn install() -> Result<(), Error> {
    WATCHDOG.call_once(|| {
        // Without the thread a blocked read would hang on: best effort.
        let _ = std::thread::Builder::new()
            .name("signal-watchdog".into())
            .spawn(watchdog);
    });
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, &INTERRUPTED).map_err(|e| {
            Error::new(
                Exit::Internal,
                format!("install a handler for signal {sig}: {e}"),
            )
        })?;
    }
    Ok(())
}

/// A SIGTERM or SIGINT arrived since [`install`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The error an apply stops with when [`interrupted`].
pub fn error() -> Error {
    Error::new(Exit::Interrupted, Exit::Interrupted.meaning())
}

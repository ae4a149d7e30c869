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

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Exit};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// From now on SIGTERM and SIGINT set the flag instead of ending fh-lite.
pub fn install() -> Result<(), Error> {
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

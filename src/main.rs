//! The `fh-lite` binary: a thin main over the library (`src/lib.rs`).
//!
//! Parse the command line, run the command, print an error once as
//! `fh-lite: <message>`, and exit with the status of its class.

#![forbid(unsafe_code)]
// Tests set up their trees with std; fh-lite itself writes through rootfs::Dir.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

use std::process::ExitCode;

fn main() -> ExitCode {
    match fh_lite::cli::parse_env().and_then(fh_lite::run) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(e) => {
            // One line (or a short paragraph) per error, never a backtrace.
            fh_lite::ui::error(&e.message);
            ExitCode::from(e.exit.code())
        }
    }
}

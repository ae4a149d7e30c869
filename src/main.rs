//! fh-lite: deploy a FlakeHub-published configuration onto this machine.
//!
//! The whole program is one pipeline (DESIGN.md):
//!
//! ```text
//! outref ──► resolve ──► plan ──► fetch ──► register ──► activate
//! ```
//!
//! `main` is thin: parse the command line (two phases, `cli`), run the
//! command, print an error once as `fh-lite: <message>`, and exit with the
//! status of its class (`error::Exit`, the table in `--help`).

#![forbid(unsafe_code)]
// Tests set up their trees with std; fh-lite itself writes through rootfs::Dir.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

mod activate;
mod apply;
mod bundle;
mod bundle_cmd;
mod cache;
mod cache_file;
mod cli;
mod direct;
mod error;
mod fetch;
mod flakehub;
mod fleet;
mod http;
mod metrics;
mod nix;
mod offline;
mod outref;
mod pin;
mod plan;
mod pool;
mod progress;
mod recover;
mod resolve;
mod resume;
mod rollback;
mod rootfs;
mod schedule;
mod signal;
mod stage;
mod state;
mod status;
mod store;
#[cfg(test)]
mod testutil;
mod url;
mod util;
mod versions;

use std::io::Write;
use std::process::ExitCode;

use cli::{Cli, Command};
use error::{Error, Exit};

fn main() -> ExitCode {
    let result = cli::parse_env().and_then(run);
    match result {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(e) => {
            // One line (or a short paragraph) per error, never a backtrace.
            let _ = writeln!(std::io::stderr().lock(), "fh-lite: {}", e.message);
            ExitCode::from(e.exit.code())
        }
    }
}

/// Run one command, then write its metrics (`--metrics-file`, metrics.rs)
/// unless another run holds the lock (it writes its own).
fn run(cli: Cli) -> Result<Exit, Error> {
    let (started, clock) = (util::unix_now(), std::time::Instant::now());
    let result = run_command(&cli);
    if let Some(path) = &cli.fleet.metrics_file {
        let exit = result.as_ref().map_or_else(|e| e.exit, |x| *x);
        if exit != Exit::AlreadyRunning {
            let duration_secs = clock.elapsed().as_secs_f64();
            let run = metrics::Run {
                started,
                duration_secs,
                exit,
            };
            metrics::write_after(&cli.common, path, &run);
        }
    }
    result
}

/// Run one command; the whole program's shape fits on this screen.
fn run_command(cli: &Cli) -> Result<Exit, Error> {
    match cli.command {
        Command::Help => {
            print_stdout(&cli::help());
            Ok(Exit::Success)
        }
        Command::Version => {
            print_stdout(&format!("fh-lite {}\n", env!("CARGO_PKG_VERSION")));
            Ok(Exit::Success)
        }
        Command::Resolve { ref reference } => resolve::run(&cli.common, reference),
        Command::Apply(ref opts) => apply::run(&cli.common, opts, &cli.offline, &cli.fleet),
        Command::Fetch(ref opts) => stage::run(&cli.common, opts, &cli.offline),
        Command::BundleCreate(ref opts) => bundle_cmd::run(&cli.common, opts, &cli.offline),
        Command::Status => status::run(&cli.common),
        Command::Rollback { to } => rollback::run(&cli.common, to),
        Command::Recover => recover::run(&cli.common),
    }
}

/// Write to stdout; a closed pipe (`fh-lite --help | head`) is not an error.
pub fn print_stdout(s: &str) {
    let _ = std::io::stdout().lock().write_all(s.as_bytes());
}

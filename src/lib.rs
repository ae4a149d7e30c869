//! fh-lite: deploy a FlakeHub-published configuration onto this machine.
//!
//! The whole program is one pipeline (docs/architecture.md):
//!
//! ```text
//! outref ──► resolve ──► plan ──► fetch ──► register ──► activate
//! ```
//!
//! The library holds every module; `src/main.rs` is a thin main over it:
//! parse the command line (two phases, [`cli`]), [`run`] the command, print
//! an error once as `fh-lite: <message>`, and exit with the status of its
//! class ([`error::Exit`], the table in `--help`). The fuzz targets
//! (`fuzz/`) and the black-box suite (`tests/blackbox`) import the modules
//! they need from here.

#![forbid(unsafe_code)]
// Tests set up their trees with std; fh-lite itself writes through rootfs::Dir
// (clippy.toml).
#![cfg_attr(test, allow(clippy::disallowed_methods))]

mod activate;
mod boot;
mod bundle;
mod cache;
pub mod cli;
mod cmd;
pub mod error;
mod exec;
mod fetch;
mod fleet;
mod http;
mod journal;
mod machine;
pub mod nix;
mod options;
mod outcome;
pub mod outref;
mod pin;
mod pipeline;
mod plan;
mod pool;
mod progress;
mod rate;
mod rootfs;
mod signal;
mod source;
mod state;
mod store;
#[doc(hidden)]
#[allow(clippy::disallowed_methods)]
pub mod testutil;
pub mod ui;
mod url;
mod util;
mod versions;

use cli::{Cli, Command};
use error::{Error, Exit};

/// The pure parsers the fuzz targets drive, besides [`nix`] and [`outref`]:
/// the daemon's stderr stream and FlakeHub's output answer.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::source::flakehub::answer;
    pub use crate::store::daemon::wire;
}

/// Run one command, then write its metrics (`--metrics-file`, fleet/metrics.rs)
/// unless another run holds the lock (it writes its own).
pub fn run(cli: Cli) -> Result<Exit, Error> {
    ui::set_quiet(cli.common.quiet || cli.common.json);
    exec::init(cli.common.verbose);
    rate::install(cli.common.limit_rate, cli.common.limit_rate_uplink);
    let (started, clock) = (util::unix_now(), std::time::Instant::now());
    let result = run_command(&cli);
    // `--json`: the stream's closing `result` event (outcome.rs).
    if let (true, Some(command)) = (cli.common.json, streamed(&cli.command)) {
        ui::print_stdout(&outcome::line(command, &result));
    }
    if let Some(path) = &cli.fleet.metrics_file {
        let exit = result.as_ref().map_or_else(|e| e.exit, |x| *x);
        if exit != Exit::AlreadyRunning {
            let duration_secs = clock.elapsed().as_secs_f64();
            let run = fleet::metrics::Run {
                started,
                duration_secs,
                exit,
            };
            fleet::metrics::write_after(
                &cli.common.machine(),
                cli.common.token_file.as_deref(),
                path,
                &run,
            );
        }
    }
    result
}

/// The commands whose `--json` output is a stream of events ending with
/// a `result` event; `status` and `resolve` print one report instead.
fn streamed(command: &Command) -> Option<&'static str> {
    Some(match command {
        Command::Apply(_) => "apply",
        Command::Fetch(_) => "fetch",
        Command::BundleCreate(_) => "bundle-create",
        Command::Rollback { .. } => "rollback",
        Command::Recover => "recover",
        Command::ConfirmBoot => "confirm-boot",
        Command::Hold => "hold",
        Command::Unhold => "unhold",
        Command::Help { .. } | Command::Version | Command::Resolve { .. } | Command::Status => {
            return None
        }
    })
}

/// Run one command; the whole program's shape fits on this screen.
fn run_command(cli: &Cli) -> Result<Exit, Error> {
    if !matches!(cli.command, Command::Help { .. } | Command::Version) {
        cli::check_root(&cli.common, cli.create_root)?;
    }
    if !cli.offline.mirrors.is_empty() {
        source::cache::install_mirrors(&cli.common.http(), &cli.offline)?;
    }
    match cli.command {
        Command::Help { all } => {
            ui::print_stdout(&if all { cli::help() } else { cli::short_help() });
            Ok(Exit::Success)
        }
        Command::Version => {
            ui::print_stdout(&format!("fh-lite {}\n", env!("CARGO_PKG_VERSION")));
            Ok(Exit::Success)
        }
        Command::Resolve { ref reference } => cmd::resolve::run(&cli.common, reference),
        Command::Apply(ref opts) => cmd::apply::run(&cli.common, opts, &cli.offline, &cli.fleet),
        Command::Fetch(ref opts) => cmd::fetch::run(&cli.common, opts, &cli.offline),
        Command::BundleCreate(ref opts) => cmd::bundle::run(&cli.common, opts, &cli.offline),
        Command::Status => cmd::status::run(&cli.common),
        Command::Rollback { to } => cmd::rollback::run(&cli.common, to),
        Command::Recover => cmd::recover::run(&cli.common),
        Command::ConfirmBoot => cmd::confirm_boot::run(&cli.common, &cli.fleet),
        Command::Hold => cmd::hold::hold(&cli.common),
        Command::Unhold => cmd::hold::unhold(&cli.common),
    }
}

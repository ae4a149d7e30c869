//! The commands, one file each (`fetch` is `fh-lite fetch`, `bundle` is
//! `fh-lite bundle create`). Only commands take the state lock and write
//! state; the layers below them return what happened.
//!
//! The layers below never see the command line's [`Common`] options: each
//! takes the few settings it uses, made here.

pub mod apply;
pub mod bundle;
pub mod confirm_boot;
pub mod fetch;
pub mod hold;
pub mod recover;
pub mod resolve;
pub mod rollback;
pub mod status;

use std::path::Path;

use crate::fetch::FetchOptions;
use crate::http::Settings as HttpSettings;
use crate::machine::Machine;
use crate::options::{Common, StoreKind};
use crate::progress::Mode;
use crate::source::flakehub::FlakeHub;
use crate::store::select::StoreChoice;

/// What each layer takes of the options every command shares.
impl Common {
    /// The managed system: `--root`, `--profile`, `--state-dir`.
    pub fn machine(&self) -> Machine {
        Machine {
            root: self.root.clone(),
            profile: self.profile.clone(),
            state_dir: self.state_dir.clone(),
        }
    }

    /// What the HTTP client takes: `--ca-file`, `--allow-insecure-http`,
    /// `--verbose` (not with `--quiet`).
    pub fn http(&self) -> HttpSettings {
        HttpSettings {
            ca_file: self.ca_file.clone(),
            allow_insecure_http: self.allow_insecure_http,
            verbose: self.verbose && !self.quiet,
        }
    }

    /// FlakeHub's addresses and the device token's file.
    pub fn flakehub(&self) -> FlakeHub {
        FlakeHub {
            api_addr: self.api_addr.clone(),
            cache_addr: self.cache_addr.clone(),
            frontend_addr: self.frontend_addr.clone(),
            token_file: self.token_file.clone(),
        }
    }

    /// How progress is shown: `--quiet`, `--json`, and whether stderr is a
    /// terminal.
    pub fn progress(&self) -> Mode {
        Mode::detect(self.quiet, self.json)
    }

    /// The store of a command with `--store kind` and `--daemon-socket`.
    pub fn store(&self, kind: StoreKind, daemon_socket: Option<&Path>) -> StoreChoice {
        StoreChoice {
            kind,
            daemon_socket: daemon_socket.map(Path::to_path_buf),
            root: self.root.clone(),
            cache_addr: self.cache_addr.clone(),
            ca_file: self.ca_file.clone(),
        }
    }

    /// How the fetch runs: `--jobs`, `--max-decoder-memory`, its notes
    /// unless `--quiet`.
    pub fn fetch(&self, jobs: usize) -> FetchOptions {
        FetchOptions::new(jobs, self.max_decoder_memory, !self.quiet)
    }
}

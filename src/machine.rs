//! The system fh-lite manages, as the command line names it: this machine,
//! or the tree beneath `--root DIR` (an image, a mounted SD card), with its
//! system profile and fh-lite's state directory there. Activation, the
//! store backends, the journal and GC roots take this, not the command
//! line's options.

use std::path::{Path, PathBuf};

use crate::state::StateDir;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// `--root DIR`: every path below is taken inside DIR; None: `/`.
    pub root: Option<PathBuf>,
    /// `--profile`: the system profile, as the managed system sees it.
    pub profile: PathBuf,
    /// `--state-dir`: state.json and the lock, as the managed system sees
    /// it.
    pub state_dir: PathBuf,
}

impl Machine {
    /// `--root`, if given.
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// The state directory, beneath `--root`.
    pub fn state(&self) -> StateDir {
        StateDir::under(self.root(), &self.state_dir)
    }
}

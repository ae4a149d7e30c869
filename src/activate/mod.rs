//! Activation: profile generations, switch-to-configuration, rollback.

use crate::cli::Common;
use crate::error::{Error, Exit};

pub fn cmd_rollback(_common: &Common, _to: Option<u64>) -> Result<Exit, Error> {
    Err(Error::new(
        Exit::NotImplemented,
        "rollback: not built yet in this version",
    ))
}

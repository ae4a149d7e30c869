//! State kept between runs: last attempt, last success, failed paths.

use crate::cli::Common;
use crate::error::{Error, Exit};

pub fn cmd_status(_common: &Common) -> Result<Exit, Error> {
    Err(Error::new(
        Exit::NotImplemented,
        "status: not built yet in this version",
    ))
}

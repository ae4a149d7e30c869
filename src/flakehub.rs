//! FlakeHub: device-token discovery and output resolution.

use crate::cli::Common;
use crate::error::{Error, Exit};
use crate::outref::OutputRef;

pub fn cmd_resolve(_common: &Common, _reference: &OutputRef) -> Result<Exit, Error> {
    Err(Error::new(
        Exit::NotImplemented,
        "resolve: talking to FlakeHub is not built yet in this version",
    ))
}

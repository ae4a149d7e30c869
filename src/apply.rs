//! `fh-lite apply`: the pipeline, one call per step.
//!
//! outref (already parsed by `cli`) → resolve (`flakehub`) → plan (`plan`)
//! → fetch (`fetch`) → register (`store`) → activate (`activate`).

use crate::cli::{ApplyOpts, Common};
use crate::error::{Error, Exit};

pub fn run(_common: &Common, opts: &ApplyOpts) -> Result<Exit, Error> {
    if opts.reference.is_loose() {
        eprintln!("{}", crate::outref::loose_warning(&opts.reference));
    }
    Err(Error::new(
        Exit::NotImplemented,
        "apply: the resolve and substitution steps are not built yet in this version",
    ))
}

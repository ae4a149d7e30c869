//! `fh-lite resolve REF [--json]`: print the store path FlakeHub resolves
//! the reference to (no download, no closure token).

use crate::error::{Error, Exit};
use crate::options::Common;
use crate::outref::OutputRef;
use crate::source::flakehub;

pub fn run(common: &Common, reference: &OutputRef) -> Result<Exit, Error> {
    let r = flakehub::resolve(&common.flakehub(), &common.http(), reference)?;
    if common.json {
        #[derive(miniserde::Serialize)]
        struct Out<'a> {
            attribute_path: &'a str,
            store_path: String,
        }
        let out = Out {
            attribute_path: &r.attribute_path,
            store_path: r.store_path.to_string(),
        };
        crate::ui::print_stdout(&format!("{}\n", miniserde::json::to_string(&out)));
    } else {
        crate::ui::print_stdout(&format!("{}\n", r.store_path));
    }
    Ok(Exit::Success)
}

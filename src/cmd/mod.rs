//! The commands, one file each (`fetch` is `fh-lite fetch`, `bundle` is
//! `fh-lite bundle create`). Only commands take the state lock and write
//! state; the layers below them return what happened.

pub mod apply;
pub mod bundle;
pub mod fetch;
pub mod hold;
pub mod recover;
pub mod resolve;
pub mod rollback;
pub mod status;

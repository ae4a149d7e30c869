//! Streaming NAR reader (§4). INTERFACE STUB.
//!
//! `parse` reads one NAR from `r` and calls the sink for every node, in NAR
//! order (parents before children, entries in ascending name order). Paths
//! given to the sink are relative to the NAR root: "" for the root itself,
//! then "a", "a/b", … (components joined by '/', as raw bytes).

use std::io::{self, Read};

pub trait NarSink {
    fn directory(&mut self, path: &[u8]) -> io::Result<()>;
    /// Called after all entries of the directory at `path` were delivered.
    fn directory_end(&mut self, path: &[u8]) -> io::Result<()>;
    /// `contents` yields exactly `size` bytes; the sink must read them all.
    fn file(
        &mut self,
        path: &[u8],
        executable: bool,
        size: u64,
        contents: &mut dyn Read,
    ) -> io::Result<()>;
    fn symlink(&mut self, path: &[u8], target: &[u8]) -> io::Result<()>;
}

#[derive(Debug)]
pub enum NarError {
    /// A rule of §4.2 was broken: which rule, and the path inside the NAR.
    Malformed { rule: &'static str, path: String },
    /// The stream ended early.
    Truncated { path: String },
    /// The sink (or the underlying reader) failed.
    Io(io::Error),
}

/// Parse one NAR from `r` into `sink`. Reads exactly the NAR's bytes.
pub fn parse<R: Read, S: NarSink>(r: &mut R, sink: &mut S) -> Result<(), NarError> {
    let _ = (r, sink);
    todo!()
}

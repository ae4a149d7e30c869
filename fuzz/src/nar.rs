//! `nar`: the streaming NAR reader on arbitrary bytes, into a sink that
//! checks what it is given: the root first and once, every other path its
//! parent's path plus one name; names non-empty, not `.`/`..`, without `/`
//! or NUL, at most 255 bytes, strictly ascending within a directory (so
//! unique); symlink targets non-empty, at most 4095 bytes, without NUL;
//! file contents exactly `size` bytes; directories closed in order; depth
//! below the cap. The sink re-encodes every event, and for an accepted NAR
//! the encoding must equal the bytes the reader consumed (the grammar has
//! one encoding per tree, so anything else means something was skipped or
//! made up). A second sink that reads no contents must see the same result.

use std::io::{self, Read};

use crate::narwriter::string;
use crate::nix::nar::{self, NarSink, MAX_DEPTH, MAX_NAME_LEN, MAX_TARGET_LEN};

/// Counts the bytes the parser takes.
struct Counting<'a> {
    data: &'a [u8],
    taken: usize,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.data.read(buf)?;
        self.taken += n;
        Ok(n)
    }
}

#[derive(Default)]
struct Checker {
    /// The NAR re-encoded from the events.
    out: Vec<u8>,
    /// Open directories: path, and the last entry name seen in it.
    open: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    root_seen: bool,
}

impl Checker {
    /// A node starts at `path`: check where it is, encode its head.
    fn enter(&mut self, path: &[u8]) {
        match self.open.last_mut() {
            None => {
                assert!(!self.root_seen, "a second root node");
                assert!(path.is_empty(), "the root node has path {path:?}");
                self.root_seen = true;
            }
            Some((parent, last)) => {
                let name = if parent.is_empty() {
                    path
                } else {
                    path.strip_prefix(&parent[..])
                        .and_then(|p| p.strip_prefix(b"/"))
                        .unwrap_or_else(|| panic!("{path:?} is not inside {parent:?}"))
                };
                assert!(!name.is_empty(), "empty name");
                assert!(name != b"." && name != b"..", "name {name:?}");
                assert!(!name.contains(&b'/') && !name.contains(&0), "name {name:?}");
                assert!(name.len() as u64 <= MAX_NAME_LEN);
                if let Some(prev) = last {
                    assert!(&prev[..] < name, "{prev:?} then {name:?}");
                }
                *last = Some(name.to_vec());
                let name = name.to_vec();
                for t in [&b"entry"[..], b"(", b"name", &name, b"node"] {
                    string(&mut self.out, t);
                }
            }
        }
        assert!(self.open.len() < MAX_DEPTH, "nested too deep");
        string(&mut self.out, b"(");
        string(&mut self.out, b"type");
    }

    /// A node ends: close it, and its entry unless it is the root.
    fn leave(&mut self) {
        string(&mut self.out, b")");
        if !self.open.is_empty() {
            string(&mut self.out, b")");
        }
    }
}

impl NarSink for Checker {
    fn directory(&mut self, path: &[u8]) -> io::Result<()> {
        self.enter(path);
        string(&mut self.out, b"directory");
        self.open.push((path.to_vec(), None));
        Ok(())
    }
    fn directory_end(&mut self, path: &[u8]) -> io::Result<()> {
        let (open, _) = self.open.pop().expect("directory_end without a directory");
        assert_eq!(open, path, "directory_end of another directory");
        self.leave();
        Ok(())
    }
    fn file(&mut self, path: &[u8], x: bool, size: u64, contents: &mut dyn Read) -> io::Result<()> {
        self.enter(path);
        string(&mut self.out, b"regular");
        if x {
            string(&mut self.out, b"executable");
            string(&mut self.out, b"");
        }
        string(&mut self.out, b"contents");
        // In small pieces, as a writer to disk would.
        let mut data = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = contents.read(&mut buf)?;
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
        }
        assert_eq!(data.len() as u64, size, "contents of {path:?}");
        string(&mut self.out, &data);
        self.leave();
        Ok(())
    }
    fn symlink(&mut self, path: &[u8], target: &[u8]) -> io::Result<()> {
        assert!(
            !target.is_empty() && !target.contains(&0),
            "target {target:?}"
        );
        assert!(target.len() as u64 <= MAX_TARGET_LEN);
        self.enter(path);
        for t in [&b"symlink"[..], b"target", target] {
            string(&mut self.out, t);
        }
        self.leave();
        Ok(())
    }
}

/// Reads no file contents (the parser skips them).
struct Lazy;

impl NarSink for Lazy {
    fn directory(&mut self, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn directory_end(&mut self, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn file(&mut self, _: &[u8], _: bool, _: u64, _: &mut dyn Read) -> io::Result<()> {
        Ok(())
    }
    fn symlink(&mut self, _: &[u8], _: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

pub fn check(data: &[u8]) {
    let mut r = Counting { data, taken: 0 };
    let mut sink = Checker::default();
    string(&mut sink.out, b"nix-archive-1");
    let res = nar::parse(&mut r, &mut sink);
    let mut r2 = Counting { data, taken: 0 };
    let res2 = nar::parse(&mut r2, &mut Lazy);
    match (&res, &res2) {
        (Ok(()), Ok(())) => {
            assert!(sink.root_seen && sink.open.is_empty());
            assert_eq!(
                sink.out,
                &data[..r.taken],
                "re-encoding differs from the input"
            );
            assert_eq!(r.taken, r2.taken);
        }
        (Err(e), Err(e2)) => {
            let msg = e.to_string();
            assert!(msg.starts_with("nar: "), "{msg}");
            assert_eq!(msg, e2.to_string());
        }
        _ => panic!("the two sinks disagree: {res:?} / {res2:?}"),
    }
}

/// Seed inputs (examples/seeds.rs): the trees of nar.rs's unit tests,
/// written by their NAR writer.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::narwriter::{dir, file, nar, Node};
    let nested = dir(vec![
        (b"a", dir(vec![(b"b", dir(vec![(b"c", file(b"deep"))]))])),
        (
            b"bin",
            dir(vec![(
                b"sh",
                Node::Link(b"/nix/store/x-bash/bin/bash".to_vec()),
            )]),
        ),
        (b"z", Node::File(true, b"z".to_vec())),
    ]);
    let names = dir(vec![
        (b"B", file(b"")),
        (b"a", file(b"")),
        ("é".as_bytes(), file(b"")),
        (b"\xff", file(b"")),
    ]);
    vec![
        ("regular", nar(&file(b"hello\n"))),
        (
            "executable",
            nar(&Node::File(true, b"#!/bin/sh\n".to_vec())),
        ),
        ("empty-dir", nar(&dir(vec![]))),
        ("symlink", nar(&Node::Link(b"../x/y".to_vec()))),
        ("nested", nar(&nested)),
        ("names", nar(&names)),
        (
            "unsorted",
            nar(&dir(vec![(b"b", file(b"")), (b"a", file(b""))])),
        ),
    ]
}

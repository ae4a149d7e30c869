//! Streaming NAR reader (docs/formats.md, "NAR: Grammar", "NAR: Strictness").
//!
//! Encoding: `int(n)` is a u64 little-endian; `str(s)` is `int(len(s))`, the
//! bytes, then zero padding to a multiple of 8.
//!
//! ```text
//! nar  = str("nix-archive-1") node
//! node = str("(") str("type") body str(")")
//! body = str("regular") [ str("executable") str("") ] str("contents") str(<file bytes>)
//!      | str("symlink") str("target") str(<target>)
//!      | str("directory") { str("entry") str("(") str("name") str(<name>)
//!                                        str("node") node str(")") }
//! ```
//!
//! Strictness (current Nix `archive.cc`, plus its 2.35 length caps):
//! tags in exactly the grammar order; padding bytes zero; the `executable`
//! value empty; entry names not empty, `.`, `..`, and without `/` or NUL;
//! entries strictly ascending byte-wise (so no duplicates); names ≤ 255
//! bytes ([`MAX_NAME_LEN`]); symlink targets non-empty, ≤ 4095 bytes
//! ([`MAX_TARGET_LEN`]), without NUL; tags ≤ 32 bytes ([`MAX_TAG_LEN`]);
//! nesting depth < 64 ([`MAX_DEPTH`]). Every length is checked before
//! anything is allocated for it; file contents are never buffered but
//! handed to the sink as a reader that yields exactly their size.
//!
//! `parse` reads one NAR from `r` and calls the sink for every node, in NAR
//! order (parents before children, entries in ascending name order). Paths
//! given to the sink are relative to the NAR root: "" for the root itself,
//! then "a", "a/b", … (components joined by '/', as raw bytes). It reads
//! exactly the NAR's bytes, with no read-ahead, so the caller can check
//! what follows (or hash and count what was read).

use std::fmt;
use std::io::{self, Read};

/// Longest directory entry name (bytes).
pub const MAX_NAME_LEN: u64 = 255;
/// Longest symlink target (bytes).
pub const MAX_TARGET_LEN: u64 = 4095;
/// Longest tag string (`nix-archive-1`, `directory`, …).
pub const MAX_TAG_LEN: u64 = 32;
/// Nodes may be nested at most this deep minus one (the root is depth 0).
pub const MAX_DEPTH: usize = 64;

const MAGIC: &[u8] = b"nix-archive-1";

pub trait NarSink {
    fn directory(&mut self, path: &[u8]) -> io::Result<()>;
    /// Called after all entries of the directory at `path` were delivered.
    fn directory_end(&mut self, path: &[u8]) -> io::Result<()>;
    /// `contents` yields exactly `size` bytes; the sink must read them all.
    /// (Bytes it leaves unread are skipped by the parser.)
    fn file(
        &mut self,
        path: &[u8],
        executable: bool,
        size: u64,
        contents: &mut dyn Read,
    ) -> io::Result<()>;
    fn symlink(&mut self, path: &[u8], target: &[u8]) -> io::Result<()>;
}

/// `path` is the path inside the NAR as shown to users: `/` for the root,
/// `/a/b` below it (lossy UTF-8).
#[derive(Debug)]
pub enum NarError {
    /// A rule of formats.md "NAR: Strictness" was broken: which rule, and the path inside the NAR.
    Malformed { rule: &'static str, path: String },
    /// The stream ended early.
    Truncated { path: String },
    /// The underlying reader failed.
    Io(io::Error),
    /// The sink failed on `path` (e.g. disk full while writing a file).
    Sink { path: String, err: io::Error },
}

impl fmt::Display for NarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NarError::Malformed { rule, path } => write!(f, "nar: {path}: {rule}"),
            NarError::Truncated { path } => {
                write!(f, "nar: {path}: the archive ends early (truncated)")
            }
            NarError::Io(e) => write!(f, "nar: reading the archive failed: {e}"),
            NarError::Sink { path, err } => write!(f, "nar: {path}: {err}"),
        }
    }
}

// The rules, as reported in `NarError::Malformed`.
const R_MAGIC: &str = "not a NAR (bad magic string)";
const R_PADDING: &str = "non-zero padding";
const R_TAG_LEN: &str = "tag longer than 32 bytes";
const R_OPEN: &str = "expected '('";
const R_CLOSE: &str = "expected ')'";
const R_TYPE: &str = "expected 'type'";
const R_UNKNOWN_TYPE: &str = "unknown node type";
const R_EXEC_OR_CONTENTS: &str = "expected 'executable' or 'contents'";
const R_EXEC_VALUE: &str = "'executable' marker has a non-empty value";
const R_CONTENTS: &str = "expected 'contents'";
const R_TARGET: &str = "expected 'target'";
const R_TARGET_EMPTY: &str = "empty symlink target";
const R_TARGET_LEN: &str = "symlink target longer than 4095 bytes";
const R_TARGET_NUL: &str = "symlink target contains NUL";
const R_ENTRY_OR_CLOSE: &str = "expected 'entry' or ')'";
const R_NAME: &str = "expected 'name'";
const R_NODE: &str = "expected 'node'";
const R_NAME_EMPTY: &str = "empty entry name";
const R_NAME_LEN: &str = "entry name longer than 255 bytes";
const R_NAME_DOT: &str = "entry name is '.' or '..'";
const R_NAME_SLASH: &str = "entry name contains '/'";
const R_NAME_NUL: &str = "entry name contains NUL";
const R_DUPLICATE: &str = "duplicate directory entry";
const R_ORDER: &str = "directory entries not in ascending order";
const R_DEPTH: &str = "directories nested 64 or more levels deep";

fn show(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path))
}

/// The parser state: the stream and the sink.
struct Parser<'a, R, S> {
    r: &'a mut R,
    sink: &'a mut S,
}

impl<R: Read, S: NarSink> Parser<'_, R, S> {
    fn malformed(rule: &'static str, path: &[u8]) -> NarError {
        NarError::Malformed {
            rule,
            path: show(path),
        }
    }

    fn read_exact(&mut self, buf: &mut [u8], path: &[u8]) -> Result<(), NarError> {
        self.r.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => NarError::Truncated { path: show(path) },
            _ => NarError::Io(e),
        })
    }

    fn int(&mut self, path: &[u8]) -> Result<u64, NarError> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b, path)?;
        Ok(u64::from_le_bytes(b))
    }

    /// The zero padding after a string of `len` bytes.
    fn padding(&mut self, len: u64, path: &[u8]) -> Result<(), NarError> {
        let n = ((8 - len % 8) % 8) as usize;
        let mut b = [0u8; 8];
        self.read_exact(&mut b[..n], path)?;
        if b[..n].iter().any(|&x| x != 0) {
            return Err(Self::malformed(R_PADDING, path));
        }
        Ok(())
    }

    /// A string of at most `max` bytes; longer is `too_long`, checked
    /// before allocating.
    fn string(
        &mut self,
        max: u64,
        too_long: &'static str,
        path: &[u8],
    ) -> Result<Vec<u8>, NarError> {
        let len = self.int(path)?;
        if len > max {
            return Err(Self::malformed(too_long, path));
        }
        // `len <= max <= 4095`, so it fits in usize.
        let mut v = vec![0u8; len as usize];
        self.read_exact(&mut v, path)?;
        self.padding(len, path)?;
        Ok(v)
    }

    fn tag(&mut self, path: &[u8]) -> Result<Vec<u8>, NarError> {
        self.string(MAX_TAG_LEN, R_TAG_LEN, path)
    }

    fn expect(&mut self, want: &[u8], rule: &'static str, path: &[u8]) -> Result<(), NarError> {
        if self.tag(path)? != want {
            return Err(Self::malformed(rule, path));
        }
        Ok(())
    }

    fn sink_err(path: &[u8]) -> impl FnOnce(io::Error) -> NarError + '_ {
        move |err| NarError::Sink {
            path: show(path),
            err,
        }
    }

    /// `node`, from `(` to `)`.
    fn node(&mut self, path: &mut Vec<u8>, depth: usize) -> Result<(), NarError> {
        if depth >= MAX_DEPTH {
            return Err(Self::malformed(R_DEPTH, path));
        }
        self.expect(b"(", R_OPEN, path)?;
        self.expect(b"type", R_TYPE, path)?;
        match &self.tag(path)?[..] {
            b"regular" => self.regular(path)?,
            b"symlink" => {
                self.expect(b"target", R_TARGET, path)?;
                let target = self.string(MAX_TARGET_LEN, R_TARGET_LEN, path)?;
                if target.is_empty() {
                    return Err(Self::malformed(R_TARGET_EMPTY, path));
                }
                if target.contains(&0) {
                    return Err(Self::malformed(R_TARGET_NUL, path));
                }
                self.sink
                    .symlink(path, &target)
                    .map_err(Self::sink_err(path))?;
            }
            // The ")" that ends a directory's entries is its node's ")".
            b"directory" => return self.directory(path, depth),
            _ => return Err(Self::malformed(R_UNKNOWN_TYPE, path)),
        }
        self.expect(b")", R_CLOSE, path)
    }

    fn regular(&mut self, path: &[u8]) -> Result<(), NarError> {
        let executable = match &self.tag(path)?[..] {
            b"executable" => {
                if !self.tag(path)?.is_empty() {
                    return Err(Self::malformed(R_EXEC_VALUE, path));
                }
                self.expect(b"contents", R_CONTENTS, path)?;
                true
            }
            b"contents" => false,
            _ => return Err(Self::malformed(R_EXEC_OR_CONTENTS, path)),
        };
        let size = self.int(path)?;
        let mut contents = Contents {
            r: &mut *self.r,
            remaining: size,
            eof: false,
            failed: false,
        };
        let res = self.sink.file(path, executable, size, &mut contents);
        // Skip what the sink left unread (also surfaces truncation there).
        let res = res.and_then(|()| io::copy(&mut contents, &mut io::sink()).map(drop));
        if let Err(err) = res {
            return Err(if contents.eof {
                NarError::Truncated { path: show(path) }
            } else if contents.failed {
                NarError::Io(err)
            } else {
                NarError::Sink {
                    path: show(path),
                    err,
                }
            });
        }
        self.padding(size, path)
    }

    fn directory(&mut self, path: &mut Vec<u8>, depth: usize) -> Result<(), NarError> {
        self.sink.directory(path).map_err(Self::sink_err(path))?;
        let mut prev: Option<Vec<u8>> = None;
        loop {
            match &self.tag(path)?[..] {
                b")" => break,
                b"entry" => {}
                _ => return Err(Self::malformed(R_ENTRY_OR_CLOSE, path)),
            }
            self.expect(b"(", R_OPEN, path)?;
            self.expect(b"name", R_NAME, path)?;
            let name = self.string(MAX_NAME_LEN, R_NAME_LEN, path)?;
            let parent_len = path.len();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&name);
            let rule = if name.is_empty() {
                Some(R_NAME_EMPTY)
            } else if name == b"." || name == b".." {
                Some(R_NAME_DOT)
            } else if name.contains(&b'/') {
                Some(R_NAME_SLASH)
            } else if name.contains(&0) {
                Some(R_NAME_NUL)
            } else {
                match &prev {
                    Some(p) if *p == name => Some(R_DUPLICATE),
                    Some(p) if *p > name => Some(R_ORDER),
                    _ => None,
                }
            };
            if let Some(rule) = rule {
                return Err(Self::malformed(rule, path));
            }
            self.expect(b"node", R_NODE, path)?;
            self.node(path, depth + 1)?;
            self.expect(b")", R_CLOSE, path)?;
            path.truncate(parent_len);
            prev = Some(name);
        }
        self.sink.directory_end(path).map_err(Self::sink_err(path))
    }
}

/// A file's contents: exactly `remaining` bytes of the stream.
struct Contents<'a, R> {
    r: &'a mut R,
    remaining: u64,
    /// The stream ended before `remaining` reached 0.
    eof: bool,
    /// The underlying reader failed.
    failed: bool,
}

impl<R: Read> Read for Contents<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.remaining).map_or(buf.len(), |r| r.min(buf.len()));
        let n = match self.r.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
        };
        if n == 0 {
            self.eof = true;
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "nar: file contents cut short",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Parse one NAR from `r` into `sink`. Reads exactly the NAR's bytes.
pub fn parse<R: Read, S: NarSink>(r: &mut R, sink: &mut S) -> Result<(), NarError> {
    let mut p = Parser { r, sink };
    let mut path = Vec::new();
    let magic = p.string(MAX_TAG_LEN, R_MAGIC, &path)?;
    if magic != MAGIC {
        return Err(Parser::<R, S>::malformed(R_MAGIC, &path));
    }
    p.node(&mut path, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::nar::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// The given strings, each encoded as `str(…)`.
    fn toks(ts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for t in ts {
            string(&mut out, t);
        }
        out
    }

    // ---- a sink that records what it is given ----

    #[derive(Default)]
    struct Record(Vec<String>);

    fn p(path: &[u8]) -> String {
        String::from_utf8_lossy(path).into_owned()
    }

    impl NarSink for Record {
        fn directory(&mut self, path: &[u8]) -> io::Result<()> {
            self.0.push(format!("dir {}", p(path)));
            Ok(())
        }
        fn directory_end(&mut self, path: &[u8]) -> io::Result<()> {
            self.0.push(format!("end {}", p(path)));
            Ok(())
        }
        fn file(
            &mut self,
            path: &[u8],
            executable: bool,
            size: u64,
            contents: &mut dyn Read,
        ) -> io::Result<()> {
            let mut data = Vec::new();
            contents.read_to_end(&mut data)?;
            assert_eq!(data.len() as u64, size);
            let x = if executable { " x" } else { "" };
            self.0.push(format!("file {}{x} {:?}", p(path), p(&data)));
            Ok(())
        }
        fn symlink(&mut self, path: &[u8], target: &[u8]) -> io::Result<()> {
            self.0.push(format!("link {} -> {}", p(path), p(target)));
            Ok(())
        }
    }

    fn run(bytes: &[u8]) -> Result<Vec<String>, NarError> {
        let mut r = bytes;
        let mut sink = Record::default();
        parse(&mut r, &mut sink)?;
        assert!(r.is_empty(), "{} bytes left unread", r.len());
        Ok(sink.0)
    }

    /// The 120-byte NAR of a single file "hello\n" (formats.md "NAR: Grammar").
    const HELLO: [u8; 120] = [
        0x0d, 0, 0, 0, 0, 0, 0, 0, b'n', b'i', b'x', b'-', b'a', b'r', b'c', b'h', //
        b'i', b'v', b'e', b'-', b'1', 0, 0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, //
        b'(', 0, 0, 0, 0, 0, 0, 0, 0x04, 0, 0, 0, 0, 0, 0, 0, //
        b't', b'y', b'p', b'e', 0, 0, 0, 0, 0x07, 0, 0, 0, 0, 0, 0, 0, //
        b'r', b'e', b'g', b'u', b'l', b'a', b'r', 0, 0x08, 0, 0, 0, 0, 0, 0, 0, //
        b'c', b'o', b'n', b't', b'e', b'n', b't', b's', 0x06, 0, 0, 0, 0, 0, 0, 0, //
        b'h', b'e', b'l', b'l', b'o', b'\n', 0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, //
        b')', 0, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn hello_nar_byte_for_byte() {
        assert_eq!(nar(&file(b"hello\n")), HELLO);
        assert_eq!(
            crate::nix::hash::Sha256::digest(&HELLO).to_nix32_prefixed(),
            "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw"
        );
        assert_eq!(run(&HELLO).unwrap(), ["file  \"hello\\n\""]);
    }

    #[test]
    fn valid_nars() {
        let cases: Vec<(&str, Node, Vec<&str>)> = vec![
            ("regular", file(b"abc"), vec!["file  \"abc\""]),
            (
                "executable",
                Node::File(true, b"#!/bin/sh\n".to_vec()),
                vec!["file  x \"#!/bin/sh\\n\""],
            ),
            ("empty file", file(b""), vec!["file  \"\""]),
            (
                "eight-byte file",
                file(b"12345678"),
                vec!["file  \"12345678\""],
            ),
            ("empty dir", dir(vec![]), vec!["dir ", "end "]),
            (
                "symlink",
                Node::Link(b"../x/y".to_vec()),
                vec!["link  -> ../x/y"],
            ),
            (
                "nested dirs",
                dir(vec![
                    (b"a", dir(vec![(b"b", dir(vec![(b"c", file(b"deep"))]))])),
                    (
                        b"bin",
                        dir(vec![(
                            b"sh",
                            Node::Link(b"/nix/store/x-bash/bin/bash".to_vec()),
                        )]),
                    ),
                    (b"z", Node::File(true, b"z".to_vec())),
                ]),
                vec![
                    "dir ",
                    "dir a",
                    "dir a/b",
                    "file a/b/c \"deep\"",
                    "end a/b",
                    "end a",
                    "dir bin",
                    "link bin/sh -> /nix/store/x-bash/bin/bash",
                    "end bin",
                    "file z x \"z\"",
                    "end ",
                ],
            ),
            (
                "non-ascii names, byte order",
                dir(vec![
                    (b"B", file(b"")),
                    (b"a", file(b"")),
                    ("é".as_bytes(), file(b"")),
                    (b"\xff", file(b"")),
                ]),
                vec![
                    "dir ",
                    "file B \"\"",
                    "file a \"\"",
                    "file é \"\"",
                    "file \u{fffd} \"\"",
                    "end ",
                ],
            ),
        ];
        for (name, node, want) in cases {
            let got = run(&nar(&node)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, want, "{name}");
        }
        let longest = dir(vec![(&[b'n'; 255], Node::Link(vec![b't'; 4095]))]);
        let link = format!("link {} -> {}", "n".repeat(255), "t".repeat(4095));
        assert_eq!(run(&nar(&longest)).unwrap(), ["dir ", &link, "end "]);
    }

    fn nested(levels: usize) -> Node {
        let mut n = file(b"leaf");
        for _ in 0..levels {
            n = dir(vec![(b"d", n)]);
        }
        n
    }

    #[test]
    fn depth_limit() {
        // Root directory at depth 0; the leaf file at depth 63 is allowed.
        assert!(run(&nar(&nested(63))).is_ok());
        let err = run(&nar(&nested(64))).unwrap_err();
        let path = format!("/{}", vec!["d"; 64].join("/"));
        assert!(
            matches!(&err, NarError::Malformed { rule, path: p } if *rule == R_DEPTH && *p == path),
            "{err}"
        );
    }

    /// `nix-archive-1 ( type` + the given tokens.
    fn node_toks(rest: &[&[u8]]) -> Vec<u8> {
        let mut v: Vec<&[u8]> = vec![b"nix-archive-1", b"(", b"type"];
        v.extend_from_slice(rest);
        toks(&v)
    }

    /// A directory with one entry named `name` (an empty file).
    fn entry_named(name: &[u8]) -> Vec<u8> {
        node_toks(&[
            b"directory",
            b"entry",
            b"(",
            b"name",
            name,
            b"node",
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"",
            b")",
            b")",
            b")",
        ])
    }

    fn raw_len_after(prefix: &[&[u8]], len: u64) -> Vec<u8> {
        let mut v = toks(prefix);
        int(&mut v, len);
        v
    }

    #[test]
    fn malformed_nars() {
        let mut bad_pad_magic = HELLO.to_vec();
        bad_pad_magic[0x15] = 1;
        let mut bad_pad_contents = HELLO.to_vec();
        bad_pad_contents[0x67] = 0x20;
        let mut bad_pad_nested = nar(&dir(vec![(b"abc", file(b"x"))]));
        let at = bad_pad_nested.len() - 3 * 16 + 9; // inside the padding of "x"
        bad_pad_nested[at] = 0xff;
        let big = vec![b'a'; 256];
        let long_target = vec![b't'; 4096];
        let long_tag = vec![b'x'; 33];
        let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
            ("bad magic", toks(&[b"nix-archive-2"]), R_MAGIC, "/"),
            ("magic too long", toks(&[&[b'n'; 40]]), R_MAGIC, "/"),
            (
                "magic huge length",
                raw_len_after(&[], u64::MAX),
                R_MAGIC,
                "/",
            ),
            ("padding after magic", bad_pad_magic, R_PADDING, "/"),
            ("padding after contents", bad_pad_contents, R_PADDING, "/"),
            ("padding in entry", bad_pad_nested, R_PADDING, "/abc"),
            (
                "tag too long",
                toks(&[b"nix-archive-1", &long_tag]),
                R_TAG_LEN,
                "/",
            ),
            (
                "tag huge length",
                raw_len_after(&[b"nix-archive-1"], u64::MAX),
                R_TAG_LEN,
                "/",
            ),
            (
                "no (",
                toks(&[b"nix-archive-1", b"[", b"type"]),
                R_OPEN,
                "/",
            ),
            (
                "no type",
                toks(&[b"nix-archive-1", b"(", b"kind"]),
                R_TYPE,
                "/",
            ),
            ("unknown type", node_toks(&[b"fifo"]), R_UNKNOWN_TYPE, "/"),
            (
                "contents first missing",
                node_toks(&[b"regular", b"size"]),
                R_EXEC_OR_CONTENTS,
                "/",
            ),
            (
                "executable value",
                node_toks(&[b"regular", b"executable", b"1"]),
                R_EXEC_VALUE,
                "/",
            ),
            (
                "executable twice",
                node_toks(&[b"regular", b"executable", b"", b"executable"]),
                R_CONTENTS,
                "/",
            ),
            (
                "extra after contents",
                node_toks(&[b"regular", b"contents", b"x", b"executable"]),
                R_CLOSE,
                "/",
            ),
            (
                "no target",
                node_toks(&[b"symlink", b"contents"]),
                R_TARGET,
                "/",
            ),
            (
                "empty target",
                node_toks(&[b"symlink", b"target", b"", b")"]),
                R_TARGET_EMPTY,
                "/",
            ),
            (
                "target too long",
                node_toks(&[b"symlink", b"target", &long_target]),
                R_TARGET_LEN,
                "/",
            ),
            (
                "target huge length",
                raw_len_after(
                    &[b"nix-archive-1", b"(", b"type", b"symlink", b"target"],
                    u64::MAX,
                ),
                R_TARGET_LEN,
                "/",
            ),
            (
                "target NUL",
                node_toks(&[b"symlink", b"target", b"a\0b", b")"]),
                R_TARGET_NUL,
                "/",
            ),
            (
                "extra after target",
                node_toks(&[b"symlink", b"target", b"a", b"target"]),
                R_CLOSE,
                "/",
            ),
            (
                "not entry",
                node_toks(&[b"directory", b"file"]),
                R_ENTRY_OR_CLOSE,
                "/",
            ),
            (
                "no (",
                node_toks(&[b"directory", b"entry", b"name"]),
                R_OPEN,
                "/",
            ),
            (
                "no name",
                node_toks(&[b"directory", b"entry", b"(", b"node"]),
                R_NAME,
                "/",
            ),
            (
                "no node",
                node_toks(&[b"directory", b"entry", b"(", b"name", b"a", b"(", b"type"]),
                R_NODE,
                "/a",
            ),
            ("empty name", entry_named(b""), R_NAME_EMPTY, "/"),
            ("name .", entry_named(b"."), R_NAME_DOT, "/."),
            ("name ..", entry_named(b".."), R_NAME_DOT, "/.."),
            ("name with /", entry_named(b"a/b"), R_NAME_SLASH, "/a/b"),
            ("name with NUL", entry_named(b"a\0b"), R_NAME_NUL, "/a\0b"),
            ("name too long", entry_named(&big), R_NAME_LEN, "/"),
            (
                "name huge length",
                raw_len_after(
                    &[
                        b"nix-archive-1",
                        b"(",
                        b"type",
                        b"directory",
                        b"entry",
                        b"(",
                        b"name",
                    ],
                    u64::MAX,
                ),
                R_NAME_LEN,
                "/",
            ),
            (
                "duplicate entry",
                nar(&dir(vec![(b"a", file(b"")), (b"a", file(b""))])),
                R_DUPLICATE,
                "/a",
            ),
            (
                "entries out of order",
                nar(&dir(vec![(
                    b"b",
                    dir(vec![(b"y", file(b"")), (b"x", file(b""))]),
                )])),
                R_ORDER,
                "/b/x",
            ),
            (
                "upper after lower",
                nar(&dir(vec![(b"a", file(b"")), (b"B", file(b""))])),
                R_ORDER,
                "/B",
            ),
            (
                "entry not closed",
                node_toks(&[
                    b"directory",
                    b"entry",
                    b"(",
                    b"name",
                    b"a",
                    b"node",
                    b"(",
                    b"type",
                    b"symlink",
                    b"target",
                    b"t",
                    b")",
                    b"entry",
                ]),
                R_CLOSE,
                "/a",
            ),
        ];
        for (name, bytes, rule, path) in cases {
            match run(&bytes) {
                Err(NarError::Malformed { rule: r, path: p }) => {
                    assert_eq!((r, p.as_str()), (rule, path), "{name}")
                }
                other => panic!("{name}: expected {rule:?} at {path}, got {other:?}"),
            }
        }
    }

    #[test]
    fn truncated_nars() {
        let tree = nar(&dir(vec![
            (b"a", file(b"hello world")),
            (b"l", Node::Link(b"a".to_vec())),
        ]));
        let mut cases: Vec<(String, Vec<u8>, &str)> = Vec::new();
        for cut in [0, 1, 7, 8, 20, 24, 40, 0x58, 0x61, 0x66, 0x68, 0x70, 119] {
            cases.push((format!("hello at {cut}"), HELLO[..cut].to_vec(), "/"));
        }
        // Offsets inside the entry "a" (its contents start after 20 tokens).
        for cut in [200, 230, 250] {
            cases.push((format!("tree at {cut}"), tree[..cut].to_vec(), "/a"));
        }
        cases.push((
            "tree without final )".into(),
            tree[..tree.len() - 16].to_vec(),
            "/",
        ));
        let mut huge = node_toks(&[b"regular", b"contents"]);
        int(&mut huge, u64::MAX);
        huge.extend_from_slice(b"short");
        cases.push(("file size beyond the stream".into(), huge, "/"));
        for (name, bytes, path) in cases {
            match run(&bytes) {
                Err(NarError::Truncated { path: p }) => assert_eq!(p, path, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn reads_exactly_the_nar() {
        let mut bytes = HELLO.to_vec();
        bytes.extend_from_slice(b"trailing");
        let mut r = &bytes[..];
        parse(&mut r, &mut Record::default()).unwrap();
        assert_eq!(r, b"trailing");
    }

    #[test]
    fn messages_and_exit_classes() {
        use crate::error::{Error, Exit};
        let e = run(&nar(&dir(vec![(b"b", file(b"")), (b"a", file(b""))]))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "nar: /a: directory entries not in ascending order"
        );
        assert_eq!(Error::from(e).exit, Exit::Verification);
        let e = run(&HELLO[..50]).unwrap_err();
        assert_eq!(e.to_string(), "nar: /: the archive ends early (truncated)");
        assert_eq!(Error::from(e).exit, Exit::Verification);

        // A sink error names the path and maps to the store class.
        struct Full;
        impl NarSink for Full {
            fn directory(&mut self, _: &[u8]) -> io::Result<()> {
                Ok(())
            }
            fn directory_end(&mut self, _: &[u8]) -> io::Result<()> {
                Ok(())
            }
            fn file(&mut self, _: &[u8], _: bool, _: u64, c: &mut dyn Read) -> io::Result<()> {
                let mut b = [0u8; 2];
                c.read_exact(&mut b)?;
                Err(io::Error::other("no space left on device"))
            }
            fn symlink(&mut self, _: &[u8], _: &[u8]) -> io::Result<()> {
                Ok(())
            }
        }
        let bytes = nar(&dir(vec![(b"f", file(b"data"))]));
        let e = parse(&mut &bytes[..], &mut Full).unwrap_err();
        assert_eq!(e.to_string(), "nar: /f: no space left on device");
        assert_eq!(Error::from(e).exit, Exit::Store);

        // The underlying reader failing (e.g. the NAR exceeds NarSize).
        let mut limited = crate::nix::hash::HashingReader::new(&HELLO[..], 100);
        let e = parse(&mut limited, &mut Record::default()).unwrap_err();
        assert!(matches!(&e, NarError::Io(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "nar: reading the archive failed: stream is longer than the expected 100 bytes (NarSize)"
        );
        assert_eq!(Error::from(e).exit, Exit::Verification);
    }

    /// A sink that reads nothing: the parser skips the contents itself.
    struct Lazy(u64);
    impl NarSink for Lazy {
        fn directory(&mut self, _: &[u8]) -> io::Result<()> {
            Ok(())
        }
        fn directory_end(&mut self, _: &[u8]) -> io::Result<()> {
            Ok(())
        }
        fn file(&mut self, _: &[u8], _: bool, size: u64, _: &mut dyn Read) -> io::Result<()> {
            self.0 += size;
            Ok(())
        }
        fn symlink(&mut self, _: &[u8], _: &[u8]) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn unread_contents_are_skipped() {
        let bytes = nar(&dir(vec![(b"a", file(b"0123456789")), (b"b", file(b"x"))]));
        let mut r = &bytes[..];
        let mut sink = Lazy(0);
        parse(&mut r, &mut sink).unwrap();
        assert_eq!((sink.0, r.len()), (11, 0));
    }

    /// Counts the bytes taken from the inner reader.
    struct Counting<R>(R, Rc<Cell<u64>>);
    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1.set(self.1.get() + n as u64);
            Ok(n)
        }
    }

    /// Reads in 64 KiB chunks and discards them; records how far ahead of
    /// it the parser has read the source.
    struct Discard {
        consumed: Rc<Cell<u64>>,
        max_ahead: u64,
        total: u64,
    }
    impl NarSink for Discard {
        fn directory(&mut self, _: &[u8]) -> io::Result<()> {
            Ok(())
        }
        fn directory_end(&mut self, _: &[u8]) -> io::Result<()> {
            Ok(())
        }
        fn file(&mut self, _: &[u8], _: bool, size: u64, c: &mut dyn Read) -> io::Result<()> {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = c.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                self.total += n as u64;
                // Source bytes consumed minus bytes delivered so far.
                let ahead = self.consumed.get() - self.total;
                self.max_ahead = self.max_ahead.max(ahead);
            }
            assert_eq!(self.total, size);
            Ok(())
        }
        fn symlink(&mut self, _: &[u8], _: &[u8]) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn large_file_streams_through() {
        const SIZE: u64 = 50 * 1024 * 1024;
        let mut head = node_toks(&[b"regular", b"executable", b"", b"contents"]);
        int(&mut head, SIZE);
        let tail = toks(&[b")"]); // SIZE is a multiple of 8: no padding
        let header_len = head.len() as u64;
        let source = io::Cursor::new(head)
            .chain(io::repeat(0x61).take(SIZE))
            .chain(io::Cursor::new(tail));
        let consumed = Rc::new(Cell::new(0));
        let mut r = Counting(source, consumed.clone());
        let mut sink = Discard {
            consumed: consumed.clone(),
            max_ahead: 0,
            total: 0,
        };
        parse(&mut r, &mut sink).unwrap();
        assert_eq!(sink.total, SIZE);
        assert_eq!(consumed.get(), header_len + SIZE + 16);
        // The parser never ran ahead of the sink beyond the header.
        assert_eq!(sink.max_ahead, header_len);
    }
}

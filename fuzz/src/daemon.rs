//! `daemon_stderr`: the decoder of the daemon's stderr stream on arbitrary
//! bytes, the first byte choosing the protocol minor version (0..39). It
//! must end in a result, never a panic or an allocation beyond its caps;
//! log lines and daemon errors reach the user cleaned: no escape
//! characters, no trailing white space, no empty log lines.

use std::cell::RefCell;

use fh_lite::fuzzing::wire;
use wire::{process_stderr, proto, Wire};

thread_local! {
    static LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn capture(line: &str) {
    LINES.with(|l| l.borrow_mut().push(line.to_string()));
}

fn assert_clean(s: &str) {
    assert!(!s.contains('\u{1b}'), "escape character left in {s:?}");
    assert_eq!(s.trim_end(), s, "trailing white space in {s:?}");
}

pub fn check(data: &[u8]) {
    let Some((&minor, mut stream)) = data.split_first() else {
        return;
    };
    LINES.with(|l| l.borrow_mut().clear());
    let res = process_stderr(&mut stream, proto(1, u64::from(minor % 40)), capture);
    for line in LINES.with(|l| l.take()) {
        assert!(!line.is_empty());
        assert_clean(&line);
    }
    match res {
        Ok(()) | Err(Wire::Io(_)) => {}
        Err(Wire::Daemon(message)) => assert_clean(&message),
        Err(Wire::Protocol(detail)) => assert!(!detail.is_empty()),
    }
}

/// Seed inputs (examples/seeds.rs): the cases of daemon.rs's unit test
/// `stderr_stream_cases`, each led by its protocol minor version.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use wire::*;
    let s = |o: &mut Vec<u8>, v: &str| put_bytes(o, v.as_bytes());
    let mut seeds = Vec::new();
    let mut add = |name, minor: u8, build: &dyn Fn(&mut Vec<u8>)| {
        let mut o = vec![minor];
        build(&mut o);
        put_u64(&mut o, STDERR_LAST);
        seeds.push((name, o));
    };
    add("last-only", 37, &|_| {});
    add("log-lines", 37, &|o| {
        put_u64(o, STDERR_NEXT);
        s(o, "copying \u{1b}[35;1mpath\u{1b}[0m\n");
        put_u64(o, STDERR_NEXT);
        s(o, "\n");
    });
    add("activities", 37, &|o| {
        put_u64(o, STDERR_START_ACTIVITY);
        for v in [7, 3, 100] {
            put_u64(o, v);
        }
        s(o, "copying path");
        for v in [2, 0, 42, 1] {
            put_u64(o, v);
        }
        s(o, "field");
        put_u64(o, 0);
        for v in [STDERR_RESULT, 7, 105, 0, STDERR_STOP_ACTIVITY, 7] {
            put_u64(o, v);
        }
    });
    add("error-new", 37, &|o| {
        put_u64(o, STDERR_ERROR);
        s(o, "Error");
        put_u64(o, 0);
        s(o, "Error");
        s(o, "path '\u{1b}[35;1m/nix/store/x\u{1b}[0m' is not valid");
        for v in [0, 1, 0] {
            put_u64(o, v);
        }
        s(o, "while adding");
    });
    add("error-old", 25, &|o| {
        put_u64(o, STDERR_ERROR);
        s(o, "error: out of disk space");
        put_u64(o, 1);
    });
    add("read-request", 37, &|o| {
        put_u64(o, STDERR_READ);
        put_u64(o, 100);
    });
    add("write-request", 37, &|o| {
        put_u64(o, STDERR_WRITE);
        s(o, "data");
    });
    add("bad-padding", 37, &|o| {
        put_u64(o, STDERR_NEXT);
        put_u64(o, 1);
        o.extend_from_slice(b"a\x01\0\0\0\0\0\0");
    });
    seeds
}

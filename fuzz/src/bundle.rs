//! `bundle`: the bundle reader (`src/bundle/tar.rs`) on arbitrary bytes,
//! read the way `apply --from` reads a bundle: the manifest first (bounded),
//! the signature, the narinfos (bounded, parsed), then the NARs streamed.
//! It must never panic, never hand out more bytes than an entry's header
//! declares or the input holds, and never more than a bound asked for.
//! Then a round trip: entries cut from the input, written by the bundle
//! writer, read back the same.

use std::io::{Cursor, Read};

// The reader is private to fh-lite's library: built here by path.
#[allow(dead_code)]
#[path = "../../src/bundle/tar.rs"]
mod tar;

use crate::nix::narinfo::NarInfo;

const MANIFEST_LIMIT: u64 = 1 << 20;
const NARINFO_LIMIT: u64 = 64 << 10;

pub fn check(data: &[u8]) {
    read_like_apply(data);
    round_trip(data);
}

fn read_like_apply(data: &[u8]) {
    let mut r = tar::Reader::new(data, "bundle");
    let mut total = 0u64;
    let mut entries = 0usize;
    loop {
        let (name, size) = match r.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) | Err(_) => return,
        };
        entries += 1;
        // Every entry costs at least a 512-byte header of the input.
        assert!(entries * 512 <= data.len(), "more entries than headers");
        assert!(name.len() <= 100);
        let limit = if name == "fh-lite-manifest.json" {
            MANIFEST_LIMIT
        } else if name.ends_with(".narinfo") || name == "fh-lite-manifest.sig" {
            NARINFO_LIMIT
        } else {
            // A NAR: streamed in chunks.
            let mut buf = [0u8; 4096];
            let mut got = 0u64;
            loop {
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got += n as u64,
                    Err(_) => return,
                }
            }
            assert_eq!(got, size, "{name}: a whole entry is its declared size");
            total += got;
            assert!(total <= data.len() as u64);
            continue;
        };
        match r.read_entry(limit) {
            Ok(bytes) => {
                assert!(bytes.len() as u64 <= limit, "{name}: over its bound");
                assert_eq!(bytes.len() as u64, size);
                total += size;
                assert!(total <= data.len() as u64);
                if let (Some(hash), Ok(text)) =
                    (name.strip_suffix(".narinfo"), std::str::from_utf8(&bytes))
                {
                    if hash.len() == 32 {
                        let _ = NarInfo::parse(text, hash);
                    }
                }
            }
            Err(e) => {
                assert!(size > limit || e.to_string().contains("bundle"), "{e}");
                return;
            }
        }
    }
}

/// Cut the input into entries (names and bodies), write them as a bundle,
/// read them back: the same names and bodies, in the same order.
fn round_trip(data: &[u8]) {
    let mut entries: Vec<(String, &[u8])> = Vec::new();
    let mut rest = data;
    while !rest.is_empty() && entries.len() < 16 {
        let n = (rest[0] as usize).min(rest.len() - 1);
        let (body, tail) = rest[1..].split_at(n);
        entries.push((format!("nar/{}.nar", entries.len()), body));
        rest = tail;
    }
    let mut w = tar::Writer::new(Cursor::new(Vec::new()), 1_700_000_000);
    for (name, body) in &entries {
        w.add(name, body).expect("writing to memory");
    }
    let out = w.finish().expect("writing to memory").into_inner();
    let mut r = tar::Reader::new(&out[..], "round trip");
    for (name, body) in &entries {
        let (got, size) = r.next_entry().expect("reads back").expect("an entry");
        assert_eq!((&got, size), (name, body.len() as u64));
        assert_eq!(r.read_entry(u64::MAX).expect("reads back"), *body);
    }
    assert!(r.next_entry().expect("the end marker").is_none());
}

//! `outref`: `outref::parse` on arbitrary text, with the first byte
//! choosing the frontend. An accepted reference has its parts well formed,
//! its `exact` flag agrees with `classify`, and it prints as a reference
//! that parses back to itself; every rejection quotes the input.

use crate::outref::{self, classify, loose_warning};

const FRONTENDS: [&str; 3] = ["", "https://flakehub.com", "http://127.0.0.1:8080/"];
const DEFAULT_ATTR: &str = "nixosConfigurations.pi";

pub fn check(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(input) = std::str::from_utf8(rest) else {
        return;
    };
    let frontend = FRONTENDS[usize::from(pick) % FRONTENDS.len()];
    let r = match outref::parse(input, frontend, DEFAULT_ATTR) {
        Ok(r) => r,
        Err(outref::Error::Empty) => {
            assert!(input.is_empty());
            return;
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(input), "{msg:?} does not quote {input:?}");
            return;
        }
    };
    for part in [&r.org, &r.project, &r.version_req] {
        assert!(!part.is_empty());
        assert!(!part.contains(['/', '#']));
        assert!(!part.chars().any(char::is_whitespace));
    }
    assert!(!r.attr_path.contains('#'));
    assert!(r.attr_path.split('.').all(|c| !c.is_empty()));
    assert_eq!(classify(&r.version_req), Ok(r.exact));
    let shown = r.to_string();
    let again = outref::parse(&shown, frontend, "other.default")
        .unwrap_or_else(|e| panic!("printed reference {shown:?} does not parse: {e}"));
    assert_eq!(again, r);
    if r.is_loose() {
        assert!(loose_warning(&r).contains(&r.version_req));
    }
}

/// Seed inputs (examples/seeds.rs): outref.rs's unit-test table, behind
/// the byte that picks the canonical frontend.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    [
        "foo/bar/*",
        "foo/bar/0.1.*",
        "omnicorp/web/0.1.2#homeConfigurations.my-config",
        "omnicorp/web/0.1.2#packages.x86_64-linux.default",
        "https://flakehub.com/f/DeterminateSystems/demo/=0.1.175#nixosConfigurations.ethercalc-demo",
        "http://127.0.0.1:8080/f/a/b/~0.1",
        "a/b/^0.1",
        "a/b/=0.1",
        "a/b/=1.2.3-rc.1",
        "a/b/>=1.0, <2.0",
        "foo//0.1",
        "a/b/c#x..y",
        "a/b/c#x#y",
    ]
    .iter()
    .enumerate()
    .map(|(i, r)| (format!("table-{i:02}"), [&[1u8][..], r.as_bytes()].concat()))
    .collect()
}

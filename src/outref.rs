//! Output references: `org/project/version_req[#attr.path]`.
//!
//! The grammar is fh's (docs/formats.md, "FlakeHub"): an optional frontend prefix
//! (`https://flakehub.com/f/`, or the `--frontend-addr` given) is stripped;
//! what remains is exactly three `/`-separated, non-empty segments, with no
//! white space anywhere, optionally followed by one `#` and an attribute
//! path. Without `#…` the attribute path is the default the caller passes
//! (the CLI's per apply type: `nixosConfigurations.<hostname>`, …). A pure
//! parser: no environment, no filesystem.
//!
//! The version requirement is Cargo-style (FlakeHub's solver behaves like
//! Cargo's) and is passed to FlakeHub verbatim. It is classified here:
//! *exact* (`=1.2.3`) always resolves to the same release; anything else is
//! *loose* and resolves to the newest matching release, so a later run cannot
//! roll back to what this one deployed.

use std::fmt;

/// A parsed, validated output reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputRef {
    pub org: String,
    pub project: String,
    /// The requirement exactly as written (FlakeHub compares it verbatim
    /// with a resolve-only token's requirement).
    pub version_req: String,
    pub exact: bool,
    pub attr_path: String,
}

impl OutputRef {
    /// True when the requirement is loose (`0.1`, `0.1.*`, `*`, `~0.1`, …).
    pub fn is_loose(&self) -> bool {
        !self.exact
    }
}

impl fmt::Display for OutputRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}#{}",
            self.org, self.project, self.version_req, self.attr_path
        )
    }
}

/// Why a reference was rejected. Every message quotes the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    Empty,
    Whitespace(String),
    TooManyHashes(String),
    Segments {
        input: String,
        found: usize,
    },
    EmptySegment {
        input: String,
        which: &'static str,
    },
    EmptyAttr(String),
    BadAttr(String),
    VersionReq {
        input: String,
        req: String,
        reason: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Empty => write!(
                f,
                "empty output reference: expected ORG/PROJECT/VERSION_REQ[#ATTR_PATH]"
            ),
            Error::Whitespace(i) => write!(
                f,
                "output reference '{i}' contains white space: expected ORG/PROJECT/VERSION_REQ[#ATTR_PATH]"
            ),
            Error::TooManyHashes(i) => write!(
                f,
                "output reference '{i}' has more than one '#': expected ORG/PROJECT/VERSION_REQ[#ATTR_PATH]"
            ),
            Error::Segments { input, found } => write!(
                f,
                "output reference '{input}' has {found} '/'-separated segment{} before '#', expected 3: ORG/PROJECT/VERSION_REQ (for example DeterminateSystems/demo/0.1)",
                if *found == 1 { "" } else { "s" }
            ),
            Error::EmptySegment { input, which } => {
                write!(f, "output reference '{input}' has an empty {which}")
            }
            Error::EmptyAttr(i) => write!(
                f,
                "output reference '{i}' has an empty attribute path after '#' (leave out '#' for the default)"
            ),
            Error::BadAttr(i) => write!(
                f,
                "output reference '{i}' has a malformed attribute path: empty component between dots"
            ),
            Error::VersionReq { input, req, reason } => write!(
                f,
                "output reference '{input}': invalid version requirement '{req}': {reason} (examples: 0.1, 0.1.*, =0.1.175, *)"
            ),
        }
    }
}

impl From<Error> for crate::error::Error {
    fn from(e: Error) -> Self {
        crate::error::Error::usage(e.to_string())
    }
}

/// Parse `input`, stripping `frontend`'s `/f/` prefix (and the default
/// `https://flakehub.com/f/`), defaulting the attribute path to
/// `default_attr` when there is no `#`.
pub fn parse(input: &str, frontend: &str, default_attr: &str) -> Result<OutputRef, Error> {
    if input.is_empty() {
        return Err(Error::Empty);
    }
    if input.chars().any(char::is_whitespace) {
        return Err(Error::Whitespace(input.to_string()));
    }
    let rest = strip_frontend(input, frontend);

    let (release, attr) = {
        let mut parts = rest.split('#');
        let release = parts.next().unwrap_or_default(); // split yields at least one item
        let attr = parts.next();
        if parts.next().is_some() {
            return Err(Error::TooManyHashes(input.to_string()));
        }
        (release, attr)
    };

    let segments: Vec<&str> = release.split('/').collect();
    if segments.len() != 3 {
        return Err(Error::Segments {
            input: input.to_string(),
            found: segments.len(),
        });
    }
    for (seg, which) in segments
        .iter()
        .zip(["org", "project", "version requirement"])
    {
        if seg.is_empty() {
            return Err(Error::EmptySegment {
                input: input.to_string(),
                which,
            });
        }
    }
    let attr_path = match attr {
        None => default_attr.to_string(),
        Some("") => return Err(Error::EmptyAttr(input.to_string())),
        Some(a) => a.to_string(),
    };
    if attr_path.split('.').any(str::is_empty) {
        return Err(Error::BadAttr(input.to_string()));
    }

    let version_req = segments[2].to_string();
    let exact = classify(&version_req).map_err(|reason| Error::VersionReq {
        input: input.to_string(),
        req: version_req.clone(),
        reason,
    })?;

    Ok(OutputRef {
        org: segments[0].to_string(),
        project: segments[1].to_string(),
        version_req,
        exact,
        attr_path,
    })
}

/// Strip `<frontend>/f/` or the canonical `https://flakehub.com/f/`.
fn strip_frontend<'a>(input: &'a str, frontend: &str) -> &'a str {
    let mut prefixes = vec!["https://flakehub.com/f/".to_string()];
    let fe = frontend.trim_end_matches('/');
    if !fe.is_empty() {
        prefixes.insert(0, format!("{fe}/f/"));
    }
    for p in &prefixes {
        if let Some(rest) = input.strip_prefix(p.as_str()) {
            return rest;
        }
    }
    input
}

/// `Ok(true)` for an exact requirement (`=x.y.z`), `Ok(false)` for a loose
/// one, `Err(reason)` when `semver` cannot parse it.
pub fn classify(req: &str) -> Result<bool, String> {
    let parsed = semver::VersionReq::parse(req).map_err(|e| e.to_string())?;
    Ok(match parsed.comparators.as_slice() {
        [c] => c.op == semver::Op::Exact && c.minor.is_some() && c.patch.is_some(),
        _ => false,
    })
}

/// The warning `apply` prints once for a loose requirement.
pub fn loose_warning(r: &OutputRef) -> String {
    format!(
        "version requirement '{}' is loose: it always resolves to the newest matching release, \
so a later run cannot roll back to the release deployed now; pin an exact release with '{}/{}/=X.Y.Z#{}'",
        r.version_req, r.org, r.project, r.attr_path
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FE: &str = "https://flakehub.com";

    /// fh's own test table (apply/mod.rs `test_parse_output_ref`), plus ours.
    #[test]
    fn accepted_forms() {
        let cases: &[(&str, &str, &str, bool)] = &[
            ("foo/bar/*", "foo/bar/*#Default.Attr", "*", false),
            (
                "foo/bar/0.1.*",
                "foo/bar/0.1.*#Default.Attr",
                "0.1.*",
                false,
            ),
            (
                "omnicorp/web/0.1.2#homeConfigurations.my-config",
                "omnicorp/web/0.1.2#homeConfigurations.my-config",
                "0.1.2",
                false,
            ),
            (
                "omnicorp/web/0.1.2#packages.x86_64-linux.default",
                "omnicorp/web/0.1.2#packages.x86_64-linux.default",
                "0.1.2",
                false,
            ),
            (
                "https://flakehub.com/f/omnicorp/web/0.1.2#packages.x86_64-linux.default",
                "omnicorp/web/0.1.2#packages.x86_64-linux.default",
                "0.1.2",
                false,
            ),
            (
                "DeterminateSystems/demo/0.1#nixosConfigurations.ethercalc-demo",
                "DeterminateSystems/demo/0.1#nixosConfigurations.ethercalc-demo",
                "0.1",
                false,
            ),
            (
                "DeterminateSystems/demo/=0.1.175#nixosConfigurations.ethercalc-demo",
                "DeterminateSystems/demo/=0.1.175#nixosConfigurations.ethercalc-demo",
                "=0.1.175",
                true,
            ),
            ("a/b/~0.1", "a/b/~0.1#Default.Attr", "~0.1", false),
            ("a/b/^0.1", "a/b/^0.1#Default.Attr", "^0.1", false),
            ("a/b/=0.1", "a/b/=0.1#Default.Attr", "=0.1", false),
        ];
        for (input, want, req, exact) in cases {
            let r = parse(input, FE, "Default.Attr").unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), *want, "case {input}");
            assert_eq!(r.version_req, *req, "case {input}");
            assert_eq!(r.exact, *exact, "case {input}");
        }
    }

    #[test]
    fn custom_frontend_prefix() {
        let r = parse(
            "http://127.0.0.1:8080/f/org/proj/=1.2.3#x.y",
            "http://127.0.0.1:8080/",
            "d",
        )
        .unwrap();
        assert_eq!(r.to_string(), "org/proj/=1.2.3#x.y");
        assert!(r.exact);
        // The canonical prefix still works with a custom frontend.
        let r = parse("https://flakehub.com/f/org/proj/1#x", "http://h", "d").unwrap();
        assert_eq!(r.org, "org");
    }

    #[test]
    fn rejected_forms() {
        let cases: &[(&str, &str)] = &[
            ("", "empty output reference: expected ORG/PROJECT/VERSION_REQ[#ATTR_PATH]"),
            (
                "foo/bar /0.1",
                "output reference 'foo/bar /0.1' contains white space: expected ORG/PROJECT/VERSION_REQ[#ATTR_PATH]",
            ),
            (
                "a/b/>=1.0, <2",
                "output reference 'a/b/>=1.0, <2' contains white space: expected ORG/PROJECT/VERSION_REQ[#ATTR_PATH]",
            ),
            (
                "foo/bar",
                "output reference 'foo/bar' has 2 '/'-separated segments before '#', expected 3: ORG/PROJECT/VERSION_REQ (for example DeterminateSystems/demo/0.1)",
            ),
            (
                "foo",
                "output reference 'foo' has 1 '/'-separated segment before '#', expected 3: ORG/PROJECT/VERSION_REQ (for example DeterminateSystems/demo/0.1)",
            ),
            (
                "foo/bar/0.1/extra#x",
                "output reference 'foo/bar/0.1/extra#x' has 4 '/'-separated segments before '#', expected 3: ORG/PROJECT/VERSION_REQ (for example DeterminateSystems/demo/0.1)",
            ),
            (
                "foo/bar/0.1#a#b",
                "output reference 'foo/bar/0.1#a#b' has more than one '#': expected ORG/PROJECT/VERSION_REQ[#ATTR_PATH]",
            ),
            ("foo//0.1", "output reference 'foo//0.1' has an empty project"),
            ("/bar/0.1", "output reference '/bar/0.1' has an empty org"),
            ("foo/bar/", "output reference 'foo/bar/' has an empty version requirement"),
            (
                "foo/bar/0.1#",
                "output reference 'foo/bar/0.1#' has an empty attribute path after '#' (leave out '#' for the default)",
            ),
            (
                "foo/bar/0.1#a..b",
                "output reference 'foo/bar/0.1#a..b' has a malformed attribute path: empty component between dots",
            ),
            (
                "foo/bar/banana#x",
                "output reference 'foo/bar/banana#x': invalid version requirement 'banana': unexpected character 'b' while parsing major version number (examples: 0.1, 0.1.*, =0.1.175, *)",
            ),
        ];
        for (input, want) in cases {
            let err = parse(input, FE, "d").expect_err(input);
            assert_eq!(err.to_string(), *want, "case {input:?}");
        }
    }

    #[test]
    fn classify_exact_and_loose() {
        for (req, exact) in [
            ("=0.1.175", true),
            ("=1.2.3-rc.1", true),
            ("0.1", false),
            ("0.1.*", false),
            ("*", false),
            ("~0.1", false),
            ("^0.1", false),
            ("0.1.123", false),
            ("=0.1", false),
        ] {
            assert_eq!(classify(req), Ok(exact), "{req}");
        }
    }

    #[test]
    fn loose_warning_names_the_pin() {
        let r = parse("org/proj/0.1#nixosConfigurations.pi", FE, "d").unwrap();
        assert_eq!(
            loose_warning(&r),
            "version requirement '0.1' is loose: it always resolves to the newest matching release, \
so a later run cannot roll back to the release deployed now; pin an exact release with 'org/proj/=X.Y.Z#nixosConfigurations.pi'"
        );
    }
}

//! FlakeHub: device-token discovery and output resolution
//! (docs/formats.md, "FlakeHub"; reference/flakehub-resolve-only-deploy.txt).
//!
//! **Device token.** The first of these files that exists is used, its
//! contents trimmed (an empty file is an error naming it):
//! `--token-file FILE` (then nothing else is tried),
//! `$CREDENTIALS_DIRECTORY/flakehub-token` (systemd `LoadCredential=`),
//! `/etc/fh-lite/token` (where README's device set-up puts it, so commands
//! run by hand find the token the unit hands over),
//! `/nix/var/determinate/token` (written by `determinate-nixd login`),
//! `$XDG_CONFIG_HOME/flakehub/auth` (else `$HOME/.config/flakehub/auth`).
//! The two fixed paths are always the running machine's, never under
//! `--root`. A token file readable by group or others draws one warning. The token
//! is never printed: [`Secret`] redacts itself, and [`token_info`] reports
//! only the file and the JWT `exp`.
//!
//! **Resolve.** `GET {api}/f/{org}/{project}/{version_req}/output/{attr}`
//! (each segment percent-encoded with the WHATWG path-segment set, so `*`,
//! `=`, `.`, `+`, `^`, `~` stay literal), `?include_token=true` for apply,
//! `Accept: application/json`, `Authorization: Bearer <device token>`.
//! The answer (at most 1 MiB) is
//! `{"attribute_path": str, "store_path": "/nix/store/…", "token": str|null}`;
//! `token` is the closure token, which can read only that store path's
//! closure from the cache, for about an hour.
//!
//! **Resolve-only device tokens** accept the version requirement they were
//! created with, verbatim (`0.1`), or an exact `=x.y.z` release that
//! requirement allows (`=0.1.175`); anything else (`0.1.123`) is 403.

use std::path::{Path, PathBuf};

use crate::error::{Error, Exit};
use crate::http::{Auth, Client, HttpError};
use crate::nix::store_path::StorePath;
use crate::outref::OutputRef;

pub use crate::http::Secret;

// The JSON answers, decoded without I/O (the fuzz targets build it alone).
pub mod answer;
mod closure_token;

pub use closure_token::ClosureToken;

/// Where fh-lite's own set-up (README, the systemd unit, the NixOS module)
/// keeps the machine's device token.
pub const FH_LITE_TOKEN: &str = "/etc/fh-lite/token";
/// Where Determinate Nix keeps the machine's FlakeHub token.
pub const DETERMINATE_TOKEN: &str = "/nix/var/determinate/token";
/// Largest token file read (JWTs are about 1 KiB).
const TOKEN_FILE_LIMIT: u64 = 64 << 10;

/// Where FlakeHub answers and what fh-lite shows it: `--api-addr`,
/// `--cache-addr`, `--frontend-addr` (the web address of a REF's URL
/// form), `--token-file` (else the default places of the device token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlakeHub {
    pub api_addr: String,
    pub cache_addr: String,
    pub frontend_addr: String,
    pub token_file: Option<PathBuf>,
}

/// What `resolve` found. `token` is the closure token, if FlakeHub sent one.
#[derive(Debug)]
pub struct Resolved {
    pub attribute_path: String,
    pub store_path: StorePath,
    pub token: Option<Secret>,
}

/// What apply needs: the store path and the closure token that reads its
/// closure from the cache ([`resolve_with_token`]).
#[derive(Debug)]
pub struct ResolvedWithToken {
    pub store_path: StorePath,
    pub token: Secret,
}

/// For `status`: which token file is used and when the token expires.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenInfo {
    pub path: PathBuf,
    /// The JWT `exp` (unix seconds), when the token is a JWT.
    pub expires_at: Option<i64>,
}

/// Errors of the FlakeHub step; each says what to do.
#[derive(Debug)]
pub enum FlakehubError {
    NoToken {
        searched: Vec<PathBuf>,
    },
    TokenRead {
        path: PathBuf,
        detail: String,
    },
    EmptyToken {
        path: PathBuf,
    },
    /// 401: the device token is missing, invalid or expired.
    Unauthorized {
        url: String,
        token_file: PathBuf,
    },
    /// 403: the token does not allow this reference.
    Forbidden {
        url: String,
        reference: Box<OutputRef>,
        server: String,
    },
    /// 404: no such project, release or output.
    NotFound {
        url: String,
        reference: String,
    },
    NoClosureToken {
        url: String,
    },
    BadJson {
        url: String,
        detail: String,
    },
    BadStorePath {
        url: String,
        value: String,
    },
    Http(HttpError),
}

impl FlakehubError {
    pub fn exit(&self) -> Exit {
        match self {
            FlakehubError::NoToken { .. }
            | FlakehubError::TokenRead { .. }
            | FlakehubError::EmptyToken { .. }
            | FlakehubError::Unauthorized { .. } => Exit::Unauthorized,
            FlakehubError::Forbidden { .. } => Exit::Forbidden,
            FlakehubError::NotFound { .. } => Exit::NotFound,
            FlakehubError::NoClosureToken { .. }
            | FlakehubError::BadJson { .. }
            | FlakehubError::BadStorePath { .. } => Exit::BadResponse,
            FlakehubError::Http(e) => e.exit(),
        }
    }
}

impl std::fmt::Display for FlakehubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlakehubError::NoToken { searched } => {
                let list: Vec<String> = searched.iter().map(|p| p.display().to_string()).collect();
                write!(
                    f,
                    "no FlakeHub device token found (searched: {}); log this machine in with \
'determinate-nixd login token', or save a resolve-only device token in a file only root can read \
(chmod 600) and pass --token-file FILE (systemd: LoadCredential=flakehub-token:FILE)",
                    list.join(", ")
                )
            }
            FlakehubError::TokenRead { path, detail } => write!(
                f,
                "cannot read device token file {}: {detail}",
                path.display()
            ),
            FlakehubError::EmptyToken { path } => write!(
                f,
                "device token file {} is empty; put the FlakeHub device token in it, or log in again \
with 'determinate-nixd login token'",
                path.display()
            ),
            FlakehubError::Unauthorized { url, token_file } => write!(
                f,
                "FlakeHub refused the device token from {} (http status 401 for GET {url}): it is \
missing, invalid or expired; create a new device token (FlakeHub organization settings → Device \
tokens) and log in again with 'determinate-nixd login token', or replace the token file",
                token_file.display()
            ),
            FlakehubError::Forbidden {
                url,
                reference,
                server,
            } => {
                let r = reference;
                let (version_req, attr_path) = (&r.version_req, &r.attr_path);
                let project = format!("{}/{}", r.org, r.project);
                let pin = format!("{project}/=X.Y.Z#{attr_path}");
                // Where a default attribute path came from.
                let attr_from = r.attr_default.then(|| {
                    match attr_path.starts_with("homeConfigurations.") {
                        true => "user name",
                        false => "host name",
                    }
                });
                let attr = match attr_from {
                    Some(from) => format!(
                        "attribute path '{attr_path}' (not given after '#': the default, from this machine's {from})"
                    ),
                    None => format!("attribute path '{attr_path}'"),
                };
                write!(
                    f,
                    "FlakeHub refused {reference} (http status 403 for GET {url}): "
                )?;
                let said = server.to_ascii_lowercase();
                if said.contains("project") {
                    write!(
                        f,
                        "this device token is not for project '{project}'. A resolve-only token \
belongs to one project: check the org and project in the reference"
                    )?;
                } else if said.contains("attribute") {
                    write!(
                        f,
                        "this device token does not allow {attr}. A resolve-only token is bound to \
the attribute path it was created with: give that one after '#' (ORG/PROJECT/VERSION_REQ#ATTR_PATH)"
                    )?;
                } else if said.contains("version") {
                    write!(
                        f,
                        "this device token does not allow version requirement '{version_req}'. A \
resolve-only token accepts only the version requirement it was created with, verbatim (e.g. 0.1), \
or an exact =X.Y.Z release that requirement allows (e.g. =0.1.175); any other requirement (e.g. \
0.1.123) is refused. Use the token's requirement as written, or pin a release: {pin}"
                    )?;
                } else {
                    write!(
                        f,
                        "this device token does not allow this reference: its project '{project}', \
version requirement '{version_req}' or {attr}. A resolve-only token accepts only its own project \
and attribute path, and the version requirement it was created with, verbatim (e.g. 0.1), or an \
exact =X.Y.Z release that requirement allows (e.g. =0.1.175)"
                    )?;
                }
                if !server.is_empty() {
                    write!(f, " (FlakeHub said: {server})")?;
                }
                Ok(())
            }
            FlakehubError::NotFound { url, reference } => write!(
                f,
                "FlakeHub has no release and output matching {reference} (http status 404 for GET \
{url}): check the org, project, version requirement and attribute path, and that the release was \
published with 'include-output-paths: true' (flakehub-push)"
            ),
            FlakehubError::NoClosureToken { url } => write!(
                f,
                "GET {url}: FlakeHub did not return a closure token (asked with include_token=true), \
so the closure cannot be fetched from the cache; check that the device token may deploy this output"
            ),
            FlakehubError::BadJson { url, detail } => write!(
                f,
                "GET {url}: FlakeHub's answer is not the expected JSON object \
{{\"attribute_path\", \"store_path\", \"token\"}}: {detail}"
            ),
            FlakehubError::BadStorePath { url, value } => write!(
                f,
                "GET {url}: FlakeHub returned store_path {value:?}, which is not a store path \
(/nix/store/<32 nix32 characters>-<name>)"
            ),
            FlakehubError::Http(e) => write!(f, "{e}"),
        }
    }
}

impl From<HttpError> for FlakehubError {
    fn from(e: HttpError) -> Self {
        FlakehubError::Http(e)
    }
}

impl From<FlakehubError> for Error {
    fn from(e: FlakehubError) -> Self {
        Error::new(e.exit(), e.to_string())
    }
}

/// Resolve `reference` with the device token (no closure token).
pub fn resolve(
    flakehub: &FlakeHub,
    http: &crate::http::Settings,
    reference: &OutputRef,
) -> Result<Resolved, FlakehubError> {
    let client = Client::new(http)?;
    get_output(&client, flakehub, reference, false)
}

/// Resolve `reference` for apply, with a client the caller keeps for the
/// cache: the answer must carry a closure token.
pub fn resolve_with_token(
    client: &Client,
    flakehub: &FlakeHub,
    reference: &OutputRef,
) -> Result<ResolvedWithToken, FlakehubError> {
    let r = get_output(client, flakehub, reference, true)?;
    match r.token {
        Some(token) => Ok(ResolvedWithToken {
            store_path: r.store_path,
            token,
        }),
        None => Err(FlakehubError::NoClosureToken {
            url: output_url(&flakehub.api_addr, reference, true),
        }),
    }
}

/// GET the output endpoint with the device token.
fn get_output(
    client: &Client,
    flakehub: &FlakeHub,
    reference: &OutputRef,
    include_token: bool,
) -> Result<Resolved, FlakehubError> {
    let (token_file, device_token) = find_token(
        flakehub.token_file.as_deref(),
        &|k| std::env::var(k).ok(),
        // A security warning, not progress: shown even with --quiet.
        true,
    )?;
    let url = output_url(&flakehub.api_addr, reference, include_token);
    let body = match client.get_json(&url, Auth::Bearer(&device_token)) {
        Ok(b) => b,
        Err(e) => {
            return Err(match e {
                HttpError::Status {
                    status: 401, url, ..
                } => FlakehubError::Unauthorized { url, token_file },
                HttpError::Status {
                    status: 403,
                    url,
                    body,
                    ..
                } => FlakehubError::Forbidden {
                    url,
                    reference: Box::new(reference.clone()),
                    server: body,
                },
                HttpError::Status {
                    status: 404, url, ..
                } => FlakehubError::NotFound {
                    url,
                    reference: reference.to_string(),
                },
                other => FlakehubError::Http(other),
            })
        }
    };
    parse_output(&url, &body)
}

/// `{api}/f/{org}/{project}/{req}/output/{attr}[?include_token=true]`.
pub fn output_url(api: &str, r: &OutputRef, include_token: bool) -> String {
    let mut url = format!(
        "{}/f/{}/{}/{}/output/{}",
        api.trim_end_matches('/'),
        encode_segment(&r.org),
        encode_segment(&r.project),
        encode_segment(&r.version_req),
        encode_segment(&r.attr_path)
    );
    if include_token {
        url.push_str("?include_token=true");
    }
    url
}

/// Percent-encode one path segment with the WHATWG path-segment set: C0
/// controls and DEL, space, `"`, `#`, `<`, `>`, `?`, `` ` ``, `{`, `}`,
/// `/`, `%`, and every non-ASCII byte (as `url::PathSegmentsMut::push`).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let escape = !(0x20..0x7f).contains(&b)
            || matches!(
                b,
                b' ' | b'"' | b'#' | b'<' | b'>' | b'?' | b'`' | b'{' | b'}' | b'/' | b'%'
            );
        if escape {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// Parse and validate the answer of the output endpoint.
fn parse_output(url: &str, body: &[u8]) -> Result<Resolved, FlakehubError> {
    let a = answer::parse_output(body).map_err(|e| match e {
        answer::OutputError::BadJson(detail) => FlakehubError::BadJson {
            url: url.to_string(),
            detail: detail.to_string(),
        },
        answer::OutputError::BadStorePath(value) => FlakehubError::BadStorePath {
            url: url.to_string(),
            value,
        },
    })?;
    Ok(Resolved {
        attribute_path: a.attribute_path,
        store_path: a.store_path,
        token: a.token.map(Secret::new),
    })
}

/// The token files tried, in order (see the module doc).
pub fn token_candidates(
    token_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<PathBuf> {
    if let Some(f) = token_file {
        return vec![f.to_path_buf()];
    }
    let env = |k: &str| env(k).filter(|v| !v.is_empty());
    let mut c = Vec::new();
    if let Some(d) = env("CREDENTIALS_DIRECTORY") {
        c.push(Path::new(&d).join("flakehub-token"));
    }
    c.push(PathBuf::from(FH_LITE_TOKEN));
    c.push(PathBuf::from(DETERMINATE_TOKEN));
    if let Some(x) = env("XDG_CONFIG_HOME") {
        c.push(Path::new(&x).join("flakehub/auth"));
    } else if let Some(h) = env("HOME") {
        c.push(Path::new(&h).join(".config/flakehub/auth"));
    }
    c
}

/// The first token file that exists, and its trimmed contents. A file
/// readable by group or others draws a warning (with `warn`).
pub fn find_token(
    token_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    warn: bool,
) -> Result<(PathBuf, Secret), FlakehubError> {
    let candidates = token_candidates(token_file, env);
    for path in &candidates {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            // A missing default location is normal; a missing --token-file is not.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && token_file.is_none() => continue,
            Err(e) => {
                return Err(FlakehubError::TokenRead {
                    path: path.clone(),
                    detail: e.to_string(),
                })
            }
        };
        return read_token(path, &meta, warn).map(|t| (path.clone(), t));
    }
    Err(FlakehubError::NoToken {
        searched: candidates,
    })
}

fn read_token(path: &Path, meta: &std::fs::Metadata, warn: bool) -> Result<Secret, FlakehubError> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let err = |detail: String| FlakehubError::TokenRead {
        path: path.to_path_buf(),
        detail,
    };
    if !meta.is_file() {
        return Err(err("not a regular file".to_string()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if warn && mode & 0o077 != 0 {
        crate::ui::warn(&format!(
            "token file {} is readable by group or others (mode {mode:03o}); \
run 'chmod 600 {}'",
            path.display(),
            path.display()
        ));
    }
    let mut raw = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(TOKEN_FILE_LIMIT + 1).read_to_end(&mut raw))
        .map_err(|e| err(e.to_string()))?;
    if raw.len() as u64 > TOKEN_FILE_LIMIT {
        return Err(err(format!(
            "larger than {TOKEN_FILE_LIMIT} bytes, not a token"
        )));
    }
    let text = String::from_utf8(raw).map_err(|_| err("not UTF-8 text".to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(FlakehubError::EmptyToken {
            path: path.to_path_buf(),
        });
    }
    Ok(Secret::new(token))
}

/// For `status`: the token file in use (`token_file`: `--token-file`) and
/// the token's JWT `exp`.
pub fn token_info(token_file: Option<&Path>) -> Result<TokenInfo, FlakehubError> {
    let (path, token) = find_token(
        token_file,
        &|k| std::env::var(k).ok(),
        // A security warning, not progress: shown even with --quiet.
        true,
    )?;
    Ok(TokenInfo {
        path,
        expires_at: jwt_exp(&token),
    })
}

/// The `exp` claim of a JWT (optionally prefixed `flakehub1_`); `None`
/// for anything that is not a JWT with a numeric `exp`. The signature is
/// not checked: this is only for display.
pub fn jwt_exp(token: &Secret) -> Option<i64> {
    answer::jwt_exp(token.expose())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SP: &str = "/nix/store/0c0g0xqf3s6wqrz3zp5n1f5d8n1pb7dd-nixos-system-pi-24.05";

    /// `/nix/store/<32 nix32 chars>-<name>` and nothing below it, as Nix
    /// checks store paths (docs/formats.md, "Hashes, nix32 and store paths").
    fn is_store_path(s: &str) -> bool {
        StorePath::parse(s).is_ok()
    }

    fn outref(req: &str, attr: &str) -> OutputRef {
        crate::outref::parse(
            &format!("org/proj/{req}#{attr}"),
            "https://flakehub.com",
            "d",
        )
        .unwrap()
    }

    #[test]
    fn output_urls_encode_segments() {
        let cases: &[(&str, &str, &str, bool, &str)] = &[
            (
                "loose",
                "0.1",
                "nixosConfigurations.pi",
                true,
                "https://api.example/f/org/proj/0.1/output/nixosConfigurations.pi?include_token=true",
            ),
            (
                "exact",
                "=0.1.175",
                "packages.x86_64-linux.default",
                false,
                "https://api.example/f/org/proj/=0.1.175/output/packages.x86_64-linux.default",
            ),
            (
                "wildcard and caret",
                "0.1.*",
                "a+b",
                false,
                "https://api.example/f/org/proj/0.1.*/output/a+b",
            ),
            (
                "quoted attr",
                "^0.1",
                "\"x?y\".z",
                false,
                "https://api.example/f/org/proj/^0.1/output/%22x%3Fy%22.z",
            ),
        ];
        for (name, req, attr, tok, want) in cases {
            assert_eq!(
                output_url("https://api.example/", &outref(req, attr), *tok),
                *want,
                "{name}"
            );
        }
    }

    #[test]
    fn encode_segment_set() {
        assert_eq!(
            encode_segment("a b/c%d#e<f>g`h{i}j"),
            "a%20b%2Fc%25d%23e%3Cf%3Eg%60h%7Bi%7Dj"
        );
        assert_eq!(encode_segment("é\u{1}\u{7f}"), "%C3%A9%01%7F");
        assert_eq!(encode_segment("*=.+~^|!$&'()@:;,[]"), "*=.+~^|!$&'()@:;,[]");
    }

    #[test]
    fn store_path_validation() {
        let good = [
            SP,
            "/nix/store/00000000000000000000000000000000-a",
            "/nix/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-a+b-c_d.e?f=g",
        ];
        for p in good {
            assert!(is_store_path(p), "{p}");
        }
        let bad = [
            ("empty", ""),
            ("relative", "nix/store/0c0g0xqf3s6wqrz3zp5n1f5d8n1pb7dd-x"),
            ("other dir", "/gnu/store/0c0g0xqf3s6wqrz3zp5n1f5d8n1pb7dd-x"),
            ("below", "/nix/store/0c0g0xqf3s6wqrz3zp5n1f5d8n1pb7dd-x/bin"),
            ("short hash", "/nix/store/0c0g0xqf3s6wqrz3zp5n1f5d8n1pb7d-x"),
            ("letter e", "/nix/store/ec0g0xqf3s6wqrz3zp5n1f5d8n1pb7dd-x"),
            ("upper", "/nix/store/0C0g0xqf3s6wqrz3zp5n1f5d8n1pb7dd-x"),
            ("no dash", "/nix/store/0c0g0xqf3s6wqrz3zp5n1f5d8n1pb7ddx"),
            ("no name", "/nix/store/0c0g0xqf3s6wqrz3zp5n1f5d8n1pb7dd-"),
            (
                "dot name",
                "/nix/store/0c0g0xqf3s6wqrz3zp5n1f5d8n1pb7dd-.-x",
            ),
            (
                "dotdot",
                "/nix/store/0c0g0xqf3s6wqrz3zp5n1f5d8n1pb7dd-../../etc",
            ),
            ("space", "/nix/store/0c0g0xqf3s6wqrz3zp5n1f5d8n1pb7dd-a b"),
            ("multibyte", "/nix/store/0c0g0xqf3s6wqrz3zp5n1f5d8n1pb7dé-x"),
        ];
        for (name, p) in bad {
            assert!(!is_store_path(p), "{name}");
        }
        let long = format!(
            "/nix/store/0c0g0xqf3s6wqrz3zp5n1f5d8n1pb7dd-{}",
            "a".repeat(212)
        );
        assert!(!is_store_path(&long));
    }

    #[test]
    fn parse_output_answers() {
        let u = "https://api/f/o/p/0.1/output/x";
        let ok = format!(r#"{{"attribute_path":"x","store_path":"{SP}","token":"abc","extra":1}}"#);
        let r = parse_output(u, ok.as_bytes()).unwrap();
        assert_eq!(r.store_path.to_string(), SP);
        assert_eq!(r.attribute_path, "x");
        assert_eq!(r.token.as_ref().map(Secret::expose), Some("abc"));
        assert!(!format!("{r:?}").contains("abc"));
        let null = format!(r#"{{"attribute_path":"x","store_path":"{SP}","token":null}}"#);
        assert!(parse_output(u, null.as_bytes()).unwrap().token.is_none());
        let missing = format!(r#"{{"attribute_path":"x","store_path":"{SP}"}}"#);
        assert!(parse_output(u, missing.as_bytes()).unwrap().token.is_none());

        let bad: &[(&str, &str, &str)] = &[
            ("not json", "<html>", "GET https://api/f/o/p/0.1/output/x: FlakeHub's answer is not the expected JSON object {\"attribute_path\", \"store_path\", \"token\"}: malformed, or a field is missing or has the wrong type"),
            ("no store_path", r#"{"attribute_path":"x"}"#, "GET https://api/f/o/p/0.1/output/x: FlakeHub's answer is not the expected JSON object {\"attribute_path\", \"store_path\", \"token\"}: malformed, or a field is missing or has the wrong type"),
            ("bad store path", r#"{"attribute_path":"x","store_path":"/etc/passwd"}"#, "GET https://api/f/o/p/0.1/output/x: FlakeHub returned store_path \"/etc/passwd\", which is not a store path (/nix/store/<32 nix32 characters>-<name>)"),
        ];
        for (name, body, want) in bad {
            let e = parse_output(u, body.as_bytes()).unwrap_err();
            assert_eq!(e.to_string(), *want, "{name}");
            assert_eq!(e.exit(), Exit::BadResponse, "{name}");
        }
    }

    #[test]
    fn candidates_in_order() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let p = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(
            token_candidates(
                None,
                &env(&[
                    ("CREDENTIALS_DIRECTORY", "/run/credentials/fh.service"),
                    ("XDG_CONFIG_HOME", "/x"),
                    ("HOME", "/h")
                ])
            ),
            p(&[
                "/run/credentials/fh.service/flakehub-token",
                FH_LITE_TOKEN,
                DETERMINATE_TOKEN,
                "/x/flakehub/auth"
            ])
        );
        assert_eq!(
            token_candidates(None, &env(&[("XDG_CONFIG_HOME", ""), ("HOME", "/h")])),
            p(&[FH_LITE_TOKEN, DETERMINATE_TOKEN, "/h/.config/flakehub/auth"])
        );
        assert_eq!(
            token_candidates(None, &env(&[])),
            p(&[FH_LITE_TOKEN, DETERMINATE_TOKEN])
        );
        assert_eq!(
            token_candidates(Some(Path::new("/t")), &env(&[("HOME", "/h")])),
            p(&["/t"])
        );
    }

    #[test]
    fn token_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("fh-lite-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tok = dir.join("flakehub-token");
        std::fs::write(&tok, "  secret-token\n").unwrap();
        std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
        let d = dir.to_str().unwrap().to_string();
        let env = move |k: &str| (k == "CREDENTIALS_DIRECTORY").then(|| d.clone());
        let (path, t) = find_token(None, &env, false).unwrap();
        assert_eq!(path, tok);
        assert_eq!(t.expose(), "secret-token");

        let empty = dir.join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let e = find_token(Some(&empty), &env, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("device token file {} is empty; put the FlakeHub device token in it, or log in again with 'determinate-nixd login token'", empty.display())
        );
        assert_eq!(e.exit(), Exit::Unauthorized);

        let missing = dir.join("missing");
        let e = find_token(Some(&missing), &env, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "cannot read device token file {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn jwt_exp_cases() {
        use base64::Engine;
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let jwt = |payload: &str| format!("{}.{}.sig", enc(r#"{"alg":"HS256"}"#), enc(payload));
        let cases: Vec<(&str, String, Option<i64>)> = vec![
            (
                "plain",
                jwt(r#"{"exp":1700000000,"sub":"x"}"#),
                Some(1700000000),
            ),
            (
                "prefixed",
                format!("flakehub1_{}", jwt(r#"{"exp":5}"#)),
                Some(5),
            ),
            ("no exp", jwt(r#"{"sub":"x"}"#), None),
            ("string exp", jwt(r#"{"exp":"5"}"#), None),
            ("not a jwt", "opaque-token".to_string(), None),
            ("bad base64", "a.!!!.c".to_string(), None),
            ("four parts", format!("{}.d", jwt(r#"{"exp":5}"#)), None),
        ];
        for (name, t, want) in cases {
            assert_eq!(jwt_exp(&Secret::new(t)), want, "{name}");
        }
    }

    #[test]
    fn error_messages() {
        let e = FlakehubError::NoToken {
            searched: vec![PathBuf::from("/a"), PathBuf::from("/b")],
        };
        assert_eq!(e.to_string(), "no FlakeHub device token found (searched: /a, /b); log this machine in with 'determinate-nixd login token', or save a resolve-only device token in a file only root can read (chmod 600) and pass --token-file FILE (systemd: LoadCredential=flakehub-token:FILE)");
        assert_eq!(e.exit(), Exit::Unauthorized);
        let e = FlakehubError::NotFound {
            url: "u".into(),
            reference: "o/p/0.1#x".into(),
        };
        assert_eq!(e.exit(), Exit::NotFound);
        assert!(e.to_string().contains("include-output-paths: true"));
        let e = FlakehubError::Http(HttpError::Status {
            url: "u".into(),
            status: 503,
            attempts: 5,
            retry_after: None,
            body: String::new(),
        });
        assert_eq!(e.exit(), Exit::Unavailable);
        let e = FlakehubError::NoClosureToken {
            url: "https://api/f/o/p/0.1/output/x?include_token=true".into(),
        };
        assert_eq!(e.to_string(), "GET https://api/f/o/p/0.1/output/x?include_token=true: FlakeHub did not return a closure token (asked with include_token=true), so the closure cannot be fetched from the cache; check that the device token may deploy this output");
        assert_eq!(e.exit(), Exit::BadResponse);
    }
}

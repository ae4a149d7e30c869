//! `fh-lite resolve` against the local FlakeHub stand-in: the
//! resolve-only token rules of the FlakeHub guide, every error class, the
//! HTTP layer's retries, limits, TLS roots, redirects and token hygiene.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::fakehub::{write_token, FakeHub, Opts};
use crate::support::util::{fh_lite, output, with_etc, Run, TempDir};

/// The device token: created for org/demo, requirement `0.1`,
/// `nixosConfigurations.pi`. It must never appear in any output.
const TOKEN: &str = "fhdev_S3CRET-d0-not-print-7f3a9c";
const ATTR: &str = "nixosConfigurations.pi";

fn sp(c: char, version: &str) -> String {
    format!(
        "/nix/store/{}-nixos-system-pi-{version}",
        c.to_string().repeat(32)
    )
}

fn config(faults: &str) -> String {
    format!(
        r#"{{
  "releases": {{
    "org/demo": {{
      "0.1.100": {{"{ATTR}": "{}"}},
      "0.1.123": {{"{ATTR}": "{}"}},
      "0.1.175": {{"{ATTR}": "{}"}},
      "0.1.180": {{"{ATTR}": "{}"}},
      "0.2.0":   {{"{ATTR}": "{}"}}
    }}
  }},
  "device_tokens": {{
    "{TOKEN}": {{"project": "org/demo", "version_req": "0.1", "attribute": "{ATTR}"}}
  }},
  "faults": {faults}
}}"#,
        sp('1', "0.1.100"),
        sp('2', "0.1.123"),
        sp('3', "0.1.175"),
        sp('4', "0.1.180"),
        sp('5', "0.2.0"),
    )
}

struct Setup {
    hub: FakeHub,
    tmp: TempDir,
    token_file: PathBuf,
}

impl Setup {
    fn new(faults: &str, opts: Opts) -> Setup {
        let hub = FakeHub::start(&config(faults), opts);
        let tmp = TempDir::new("resolve");
        let token_file = write_token(tmp.path(), "token", TOKEN, 0o600);
        Setup {
            hub,
            tmp,
            token_file,
        }
    }

    fn plain(faults: &str) -> Setup {
        Setup::new(faults, Opts::default())
    }

    /// `fh-lite resolve REF` against this hub, with `--token-file
    /// token_file` if given (else fh-lite searches its usual places), plus
    /// `extra` args.
    fn command(&self, reference: &str, token_file: Option<&Path>, extra: &[&str]) -> Command {
        let api = self.hub.url();
        let mut args = vec!["resolve", reference, "--api-addr", &api];
        if let Some(tf) = token_file {
            args.extend(["--token-file", tf.to_str().unwrap()]);
        }
        if !self.hub.tls {
            args.push("--allow-insecure-http");
        }
        args.extend_from_slice(extra);
        fh_lite(&args)
    }

    /// `fh-lite resolve REF` with this hub and token, plus `extra` args.
    fn run(&self, reference: &str, extra: &[&str]) -> Run {
        no_secret(output(self.command(
            reference,
            Some(&self.token_file),
            extra,
        )))
    }

    fn output_url(&self, req: &str) -> String {
        format!("{}/f/org/demo/{req}/output/{ATTR}", self.hub.url())
    }
}

/// Every run is checked: the device token never reaches stdout or stderr.
fn no_secret(r: Run) -> Run {
    assert!(
        !r.stdout.contains(TOKEN) && !r.stderr.contains(TOKEN),
        "token leaked: {r:?}"
    );
    r
}

fn reference(req: &str) -> String {
    format!("org/demo/{req}#{ATTR}")
}

#[test]
fn loose_requirement_resolves_to_the_newest_release() {
    let s = Setup::plain("{}");
    let r = s.run(&reference("0.1"), &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, format!("{}\n", sp('4', "0.1.180")));
    assert_eq!(r.stderr, "");
    let reqs = s.hub.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].path, format!("/f/org/demo/0.1/output/{ATTR}"));
    assert_eq!(reqs[0].auth, "bearer");
    assert_eq!(reqs[0].method, "GET");
}

#[test]
fn exact_requirement_within_the_token_resolves_to_that_release() {
    let s = Setup::plain("{}");
    let r = s.run(&reference("=0.1.175"), &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, format!("{}\n", sp('3', "0.1.175")));
    // `=` stays literal in the path, as fh sends it.
    assert_eq!(
        s.hub.requests()[0].path,
        format!("/f/org/demo/=0.1.175/output/{ATTR}")
    );
}

#[test]
fn json_output_has_attribute_and_store_path_only() {
    let s = Setup::plain("{}");
    let r = s.run(&reference("=0.1.175"), &["--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        format!(
            "{{\"attribute_path\":\"{ATTR}\",\"store_path\":\"{}\"}}\n",
            sp('3', "0.1.175")
        )
    );
}

#[test]
fn other_loose_requirement_is_forbidden() {
    let s = Setup::plain("{}");
    let r = s.run(&reference("0.1.123"), &[]);
    assert_eq!(r.code, 11, "{r:?}");
    assert_eq!(r.stdout, "");
    let want = format!(
        "fh-lite: FlakeHub refused org/demo/0.1.123#{ATTR} (http status 403 for GET {}): \
this device token does not allow version requirement '0.1.123'. A resolve-only token accepts only \
the version requirement it was created with, verbatim (e.g. 0.1), or an exact =X.Y.Z release that \
requirement allows (e.g. =0.1.175); any other requirement (e.g. 0.1.123) is refused. Use the \
token's requirement as written, or pin a release: \
org/demo/=X.Y.Z#{ATTR} (FlakeHub said: {{\"message\": \"version requirement 0.1.123 is neither the \
token's requirement nor an exact version it allows\"}})\n",
        s.output_url("0.1.123")
    );
    assert_eq!(r.stderr, want);
}

#[test]
fn exact_release_outside_the_token_requirement_is_forbidden() {
    let s = Setup::plain("{}");
    let r = s.run(&reference("=0.2.0"), &[]);
    assert_eq!(r.code, 11, "{r:?}");
    assert!(
        r.stderr
            .contains("does not allow version requirement '=0.2.0'"),
        "{r:?}"
    );
}

/// A 403 names the part of the reference the token refused, and where a
/// default attribute path came from.
#[test]
fn forbidden_names_the_refused_part() {
    let s = Setup::plain("{}");
    let r = s.run(&format!("org/other/0.1#{ATTR}"), &[]);
    assert_eq!(r.code, 11, "{r:?}");
    assert!(
        r.stderr.contains(
            "): this device token is not for project 'org/other'. A resolve-only token belongs to one project: check the org and project in the reference"
        ),
        "{r:?}"
    );
    assert!(!r.stderr.contains("version requirement '0.1'"), "{r:?}");

    let r = s.run("org/demo/0.1#nixosConfigurations.other", &[]);
    assert_eq!(r.code, 11, "{r:?}");
    assert!(
        r.stderr.contains(
            "): this device token does not allow attribute path 'nixosConfigurations.other'. A resolve-only token is bound to the attribute path it was created with"
        ),
        "{r:?}"
    );

    // No '#': the default attribute path, from this machine's host name.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let r = s.run("org/demo/0.1", &[]);
    assert_eq!(r.code, 11, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "): this device token does not allow attribute path 'nixosConfigurations.{}' (not given after '#': the default, from this machine's host name). ",
            host.trim()
        )),
        "{r:?}"
    );
}

#[test]
fn missing_output_is_not_found() {
    let s = Setup::plain("{}");
    let r = s.run("org/demo/0.1#nixosConfigurations.other", &[]);
    // The token is bound to another attribute: 403, not a leak of existence.
    assert_eq!(r.code, 11, "{r:?}");
    // A requirement no release matches (allowed by the token as exact).
    let r = s.run(&reference("=0.1.999"), &[]);
    assert_eq!(r.code, 12, "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "fh-lite: FlakeHub has no release and output matching org/demo/=0.1.999#{ATTR} \
(http status 404 for GET {}): check the org, project, version requirement and attribute path, \
and that the release was published with 'include-output-paths: true' (flakehub-push)\n",
            s.output_url("=0.1.999")
        )
    );
}

#[test]
fn unknown_token_is_unauthorized() {
    let s = Setup::plain("{}");
    let other = write_token(s.tmp.path(), "other", "not-a-known-token", 0o600);
    let r = no_secret(output(s.command(&reference("0.1"), Some(&other), &[])));
    assert_eq!(r.code, 10, "{r:?}");
    assert!(!r.stderr.contains("not-a-known-token"), "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "fh-lite: FlakeHub refused the device token from {} (http status 401 for GET {}): \
it is missing, invalid or expired; create a new device token (FlakeHub organization settings → \
Device tokens) and log in again with 'determinate-nixd login token', or replace the token file\n",
            other.display(),
            s.output_url("0.1")
        )
    );
}

#[test]
fn no_token_file_lists_the_places_searched() {
    let tmp = TempDir::new("notoken");
    let mut cmd = fh_lite(&[
        "resolve",
        &reference("0.1"),
        "--api-addr",
        "https://127.0.0.1:9",
    ]);
    cmd.env("CREDENTIALS_DIRECTORY", tmp.path());
    let r = output(cmd);
    assert_eq!(r.code, 10, "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "fh-lite: no FlakeHub device token found (searched: {}/flakehub-token, \
/etc/fh-lite/token, /nix/var/determinate/token, /nonexistent-fh-lite-test-config/flakehub/auth); log this machine in \
with 'determinate-nixd login token', or save a resolve-only device token in a file only root can \
read (chmod 600) and pass --token-file FILE (systemd: LoadCredential=flakehub-token:FILE)\n",
            tmp.path().display()
        )
    );
}

#[test]
fn token_from_credentials_directory_and_xdg_config() {
    let s = Setup::plain("{}");
    // systemd LoadCredential=
    let creds = s.tmp.path().join("creds");
    write_token(&creds, "flakehub-token", TOKEN, 0o600);
    let mut cmd = s.command(&reference("0.1"), None, &[]);
    cmd.env("CREDENTIALS_DIRECTORY", &creds);
    let r = no_secret(output(cmd));
    assert_eq!(r.code, 0, "{r:?}");
    // $XDG_CONFIG_HOME/flakehub/auth, the last place tried.
    let xdg = s.tmp.path().join("xdg");
    write_token(&xdg, "flakehub/auth", TOKEN, 0o600);
    let mut cmd = s.command(&reference("0.1"), None, &[]);
    cmd.env("XDG_CONFIG_HOME", &xdg);
    let r = no_secret(output(cmd));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, format!("{}\n", sp('4', "0.1.180")));
}

/// A device set up as README says keeps its token in /etc/fh-lite/token
/// (the unit hands it over with LoadCredential=): a command run by hand,
/// without $CREDENTIALS_DIRECTORY, finds it there, and `status` names it
/// and the places it searched.
#[test]
fn token_from_etc_fh_lite_token() {
    if !crate::support::require(
        "root and unshare, for a private /etc",
        crate::support::is_root() && crate::support::host::have("unshare"),
    ) {
        return;
    }
    let s = Setup::plain("{}");
    let etc = s.tmp.path().join("etc");
    write_token(&etc, "fh-lite/token", TOKEN, 0o600);
    let r = no_secret(output(with_etc(
        &s.command(&reference("0.1"), None, &[]),
        &etc,
    )));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, format!("{}\n", sp('4', "0.1.180")));
    let root = s.tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let st = no_secret(output(with_etc(
        &fh_lite(&["status", "--root", root.to_str().unwrap()]),
        &etc,
    )));
    assert_eq!(st.code, 0, "{st:?}");
    assert!(
        st.stdout.ends_with(
            "token search    /etc/fh-lite/token, /nix/var/determinate/token, \
/nonexistent-fh-lite-test-config/flakehub/auth\n\
token file      /etc/fh-lite/token (no expiry: not a JWT)\n"
        ),
        "{st:?}"
    );
}

#[test]
fn empty_token_file_is_named() {
    let s = Setup::plain("{}");
    let empty = write_token(s.tmp.path(), "empty", "  ", 0o600);
    let r = output(s.command(&reference("0.1"), Some(&empty), &[]));
    assert_eq!(r.code, 10, "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "fh-lite: device token file {} is empty; put the FlakeHub device token in it, or log \
in again with 'determinate-nixd login token'\n",
            empty.display()
        )
    );
    assert!(s.hub.requests().is_empty());
}

#[test]
fn world_readable_token_file_warns() {
    let s = Setup::plain("{}");
    let loose = write_token(s.tmp.path(), "loose", TOKEN, 0o644);
    let r = no_secret(output(s.command(&reference("0.1"), Some(&loose), &[])));
    assert_eq!(r.code, 0, "{r:?}");
    let p = loose.display();
    assert_eq!(
        r.stderr,
        format!(
            "fh-lite: warning: token file {p} is readable by group or others (mode 644); run 'chmod 600 {p}'\n"
        )
    );
}

#[test]
fn retries_503_then_succeeds() {
    let s = Setup::plain(r#"{"fail": [{"count": 2, "status": 503, "prefix": "/f/"}]}"#);
    let r = s.run(&reference("0.1"), &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, format!("{}\n", sp('4', "0.1.180")));
    let statuses: Vec<u16> = s.hub.requests().iter().map(|q| q.status).collect();
    assert_eq!(statuses, vec![503, 503, 200]);
    assert!(s.hub.requests().iter().all(|q| q.auth == "bearer"));
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{r:?}");
    let url = s.output_url("0.1");
    for (i, line) in lines.iter().enumerate() {
        let prefix = format!(
            "fh-lite: GET {url}: http status 503; retry {} of 4 in ",
            i + 1
        );
        assert!(line.starts_with(&prefix), "{line:?} vs {prefix:?}");
        assert!(line.ends_with('s'), "{line}");
    }
    // --quiet: the same retries, no lines.
    let s = Setup::plain(r#"{"fail": [{"count": 1, "status": 502, "prefix": "/f/"}]}"#);
    let r = s.run(&reference("0.1"), &["--quiet"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stderr, "");
    assert_eq!(s.hub.requests().len(), 2);
}

#[test]
fn retry_after_is_honoured() {
    let s = Setup::plain(
        r#"{"fail": [{"count": 1, "status": 429, "prefix": "/f/", "retry_after": "1"}]}"#,
    );
    let start = Instant::now();
    let r = s.run(&reference("0.1"), &[]);
    let took = start.elapsed();
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "fh-lite: GET {}: http status 429; retry 1 of 4 in 1.0s\n",
            s.output_url("0.1")
        )
    );
    assert!(took >= Duration::from_secs(1), "{took:?}");
}

#[test]
fn persistent_503_is_unavailable_after_retries() {
    let s = Setup::plain(
        r#"{"fail": [{"status": 503, "prefix": "/f/", "retry_after": "0", "body": "down for maintenance"}]}"#,
    );
    let r = s.run(&reference("0.1"), &[]);
    assert_eq!(r.code, 13, "{r:?}");
    assert_eq!(s.hub.requests().len(), 5, "1 attempt + 4 retries");
    assert_eq!(r.stderr.lines().count(), 5, "{r:?}");
    assert!(
        r.stderr.ends_with(&format!(
            "fh-lite: GET {}: http status 503 after 5 attempts: down for maintenance\n",
            s.output_url("0.1")
        )),
        "{r:?}"
    );
}

#[test]
fn bad_answers_are_refused() {
    let url = |s: &Setup| s.output_url("0.1");
    // Over 1 MiB of JSON.
    let s = Setup::plain(r#"{"oversize_json": true}"#);
    let r = s.run(&reference("0.1"), &[]);
    assert_eq!(r.code, 14, "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "fh-lite: GET {}: response larger than 1048576 bytes, refused (is this the right server?)\n",
            url(&s)
        )
    );
    // A store_path that is not a store path.
    let s = Setup::plain(r#"{"bad_store_path": "/nix/store/../../etc/passwd"}"#);
    let r = s.run(&reference("0.1"), &[]);
    assert_eq!(r.code, 14, "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "fh-lite: GET {}: FlakeHub returned store_path \"/nix/store/../../etc/passwd\", which is \
not a store path (/nix/store/<32 nix32 characters>-<name>)\n",
            url(&s)
        )
    );
    // Not JSON at all (a 200 with an HTML body).
    let s = Setup::plain(
        r#"{"fail": [{"count": 1, "status": 200, "prefix": "/f/", "body": "<html>hi</html>"}]}"#,
    );
    let r = s.run(&reference("0.1"), &[]);
    assert_eq!(r.code, 14, "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "fh-lite: GET {}: FlakeHub's answer is not the expected JSON object \
{{\"attribute_path\", \"store_path\", \"token\"}}: malformed, or a field is missing or has the wrong type\n",
            url(&s)
        )
    );
    // A body cut short: retried, then a network error (reading failed).
    let s = Setup::plain(r#"{"truncate": [{"count": 1, "prefix": "/f/", "after": 10}]}"#);
    let r = s.run(&reference("0.1"), &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(s.hub.requests().len(), 2);
    assert!(
        r.stderr.starts_with(&format!("fh-lite: GET {}: ", url(&s))),
        "{r:?}"
    );
}

#[test]
fn http_is_refused_without_allow_insecure_http() {
    let tmp = TempDir::new("insecure");
    let tf = write_token(tmp.path(), "token", TOKEN, 0o600);
    let r = no_secret(output(fh_lite(&[
        "resolve",
        &reference("0.1"),
        "--api-addr",
        "http://127.0.0.1:9",
        "--token-file",
        tf.to_str().unwrap(),
    ])));
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "fh-lite: refusing insecure address http://127.0.0.1:9/f/org/demo/0.1/output/{ATTR}: \
http:// sends requests and credentials in clear text; use https://, or pass --allow-insecure-http \
(tests and labs only)\n"
        )
    );
}

#[test]
fn https_needs_the_ca_file() {
    let s = Setup::new(
        "{}",
        Opts {
            tls: true,
            second: false,
        },
    );
    let ca = s.hub.ca_file();
    let r = s.run(&reference("0.1"), &["--ca-file", ca.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, format!("{}\n", sp('4', "0.1.180")));
    // SSL_CERT_FILE works the same way.
    let mut cmd = s.command(&reference("=0.1.175"), Some(&s.token_file), &[]);
    cmd.env("SSL_CERT_FILE", &ca);
    let r = no_secret(output(cmd));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, format!("{}\n", sp('3', "0.1.175")));
    // Without it: the built-in roots do not know the CA.
    let r = s.run(&reference("0.1"), &[]);
    assert_eq!(r.code, 15, "{r:?}");
    let host = format!("127.0.0.1:{}", s.hub.port);
    assert!(
        r.stderr
            .starts_with(&format!("fh-lite: TLS connection to {host} failed: ")),
        "{r:?}"
    );
    assert!(
        r.stderr.ends_with(&format!(
            "(GET {}); if {host} uses a private CA, pass its certificate with --ca-file FILE (or SSL_CERT_FILE)\n",
            s.output_url("0.1")
        )),
        "{r:?}"
    );
    // Not retried: a certificate does not get better.
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
}

#[test]
fn connection_refused_is_a_network_error() {
    // A port that was just free: bind, note, drop.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = TempDir::new("refused");
    let tf = write_token(tmp.path(), "token", TOKEN, 0o600);
    let api = format!("http://127.0.0.1:{port}");
    let r = no_secret(output(fh_lite(&[
        "resolve",
        &reference("0.1"),
        "--api-addr",
        &api,
        "--token-file",
        tf.to_str().unwrap(),
        "--allow-insecure-http",
        "--quiet",
    ])));
    assert_eq!(r.code, 15, "{r:?}");
    assert!(
        r.stderr
            .starts_with(&format!("fh-lite: cannot connect to 127.0.0.1:{port}: ")),
        "{r:?}"
    );
}

#[test]
fn redirects_keep_credentials_on_their_host_only() {
    // Same scheme, host and port (/_r/… is routed as …): the token follows.
    let s = Setup::plain("{}");
    let own = s.hub.url() + "/_r";
    control(
        &s.hub,
        &format!(r#"{{"redirect": [{{"prefix": "/f/", "status": 307, "to": "{own}"}}]}}"#),
    );
    let r = s.run(&reference("0.1"), &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let seen: Vec<(String, String, u16)> = s
        .hub
        .requests()
        .into_iter()
        .map(|q| (q.path, q.auth, q.status))
        .collect();
    let path = format!("/f/org/demo/0.1/output/{ATTR}");
    assert_eq!(
        seen,
        vec![
            (path.clone(), "bearer".to_string(), 307),
            (format!("/_r{path}"), "bearer".to_string(), 200),
        ]
    );

    // Another host:port (http://localhost:PORT2): the token is dropped.
    let s = Setup::new(
        "{}",
        Opts {
            tls: false,
            second: true,
        },
    );
    let second = s.hub.second_url();
    control(
        &s.hub,
        &format!(r#"{{"redirect": [{{"prefix": "/f/", "status": 302, "to": "{second}"}}]}}"#),
    );
    let r = s.run(&reference("0.1"), &[]);
    assert_eq!(r.code, 10, "{r:?}");
    let seen: Vec<(String, String, u16)> = s
        .hub
        .requests()
        .into_iter()
        .map(|q| (q.server, q.auth, q.status))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("main".to_string(), "bearer".to_string(), 302),
            ("second".to_string(), "none".to_string(), 401),
        ]
    );
    assert!(
        r.stderr
            .contains(&format!("GET {second}/f/org/demo/0.1/output/")),
        "{r:?}"
    );
}

/// POST /_control to a plain-HTTP hub (std only).
fn control(hub: &FakeHub, json: &str) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", hub.port)).expect("connect fakehub");
    write!(
        c,
        "POST /_control HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
Content-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    )
    .unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[test]
fn verbose_logs_each_request_without_credentials() {
    let s = Setup::plain("{}");
    let r = s.run(&reference("=0.1.175"), &["--verbose"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "fh-lite: GET {}: http status 200\n",
            s.output_url("=0.1.175")
        )
    );
    // --quiet wins over --verbose.
    let r = s.run(&reference("=0.1.175"), &["--verbose", "--quiet"]);
    assert_eq!(r.stderr, "", "{r:?}");
}

/// HTTPS_PROXY is honoured: the request goes through the proxy's CONNECT
/// tunnel (TLS end to end, so the proxy sees only the target), and NO_PROXY
/// bypasses it.
#[test]
fn https_proxy_from_the_environment_is_used() {
    let s = Setup::new(
        "{}",
        Opts {
            tls: true,
            second: false,
        },
    );
    let proxy = crate::support::fakehub::Proxy::start();
    let ca = s.hub.ca_file();
    let run = |no_proxy: Option<&str>| {
        let mut cmd = s.command(
            &reference("=0.1.175"),
            Some(&s.token_file),
            &["--ca-file", ca.to_str().unwrap()],
        );
        cmd.env("HTTPS_PROXY", proxy.url());
        if let Some(n) = no_proxy {
            cmd.env("NO_PROXY", n);
        }
        no_secret(output(cmd))
    };
    let r = run(None);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, format!("{}\n", sp('3', "0.1.175")));
    assert_eq!(
        proxy.tunnels(),
        [format!("CONNECT 127.0.0.1:{}", s.hub.port)]
    );
    let r = run(Some("127.0.0.1"));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(proxy.tunnels().len(), 1, "NO_PROXY bypasses the proxy");
}

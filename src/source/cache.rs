//! `apply nixos /nix/store/HASH-NAME --cache URL`: a store path given
//! directly, from any signed Nix binary cache, without FlakeHub.
//!
//! The cache is `https://…` (or `http://…` with `--allow-insecure-http`)
//! through the one HTTP client, or a `file://` directory (cache/file.rs).
//! Its credential comes from `--netrc-file FILE` (the netrc format Nix
//! reads through curl: `machine HOST login NAME password SECRET`, a
//! `default` entry; sent as HTTP Basic) or `--cache-token-file FILE`
//! (`Authorization: Bearer`). Either is a [`Secret`]: read from the file
//! into memory, sent only to the cache's own origin (scheme, host, port),
//! never printed. There are no default keys in this mode (cli.rs requires
//! `--trusted-key`), and the reference apply records is the store path.
//! Plan, fetch, register and activate are the same as for FlakeHub.

use std::io::Read;
use std::path::Path;

use crate::cache::file::FileCache;
use crate::cache::{status_error, CacheClient, FetchError};
use crate::error::{Error, Exit};
use crate::http::Settings;
use crate::http::{Auth, Client, RangeAnswer, Secret};
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StorePath;
use crate::options::OfflineOpts;
use crate::outref::OutputRef;
use crate::source::Source;
use crate::store::Store;

/// The credential of an HTTP cache, and where it came from (for messages).
enum Credential {
    None,
    /// `login:password` from a netrc entry.
    Login {
        secret: Secret,
        from: String,
    },
    /// A Bearer token.
    Bearer {
        secret: Secret,
        from: String,
    },
}

impl Credential {
    fn from(&self) -> Option<&str> {
        match self {
            Credential::None => None,
            Credential::Login { from, .. } | Credential::Bearer { from, .. } => Some(from),
        }
    }
}

/// A binary cache over HTTP with its own credential (not FlakeHub's
/// closure token).
struct HttpCache {
    client: Client,
    base: String,
    credential: Credential,
}

impl HttpCache {
    /// The credential for `url`: only on the cache's own origin.
    fn auth(&self, url: &str) -> Auth<'_> {
        if !crate::url::same_origin(&self.base, url) {
            return Auth::None;
        }
        match &self.credential {
            Credential::None => Auth::None,
            Credential::Login { secret, .. } => Auth::Login(secret),
            Credential::Bearer { secret, .. } => Auth::Bearer(secret),
        }
    }
}

impl CacheClient for HttpCache {
    fn base_url(&self) -> &str {
        &self.base
    }
    fn get_narinfo(&self, hash_part: &str) -> Result<Option<String>, FetchError> {
        let url = self.narinfo_url(hash_part);
        let auth = self.auth(&url);
        crate::cache::get_narinfo_at(&self.client, url, auth)
    }
    fn get_nar(&self, url: &str) -> Result<Box<dyn Read + Send>, FetchError> {
        (self.client.get_stream(url, self.auth(url))).map_err(status_error)
    }
    fn get_nar_from(&self, url: &str, offset: u64) -> Result<RangeAnswer, FetchError> {
        (self.client.get_stream_from(url, self.auth(url), offset)).map_err(status_error)
    }
}

/// A cache client borrowed as a trait object.
struct Borrowed<'a>(&'a dyn CacheClient);

impl CacheClient for Borrowed<'_> {
    fn base_url(&self) -> &str {
        self.0.base_url()
    }
    fn get_narinfo(&self, h: &str) -> Result<Option<String>, FetchError> {
        self.0.get_narinfo(h)
    }
    fn get_nar(&self, url: &str) -> Result<Box<dyn Read + Send>, FetchError> {
        self.0.get_nar(url)
    }
    fn get_nar_from(&self, url: &str, offset: u64) -> Result<RangeAnswer, FetchError> {
        self.0.get_nar_from(url, offset)
    }
    fn nar_url(&self, info: &NarInfo) -> String {
        self.0.nar_url(info)
    }
}

/// The store path and the cache it comes from.
pub struct Direct {
    store_path: StorePath,
    cache: Box<dyn CacheClient>,
    /// Where the credential came from (`--netrc-file F`, …), for a 401.
    credential_from: Option<String>,
    no_token: Secret,
}

impl Direct {
    /// A refused login is named as such, with where the credential came from.
    fn explain(&self, e: FetchError) -> Error {
        match &e {
            FetchError::Http { url, status: 401 } => {
                let msg = match &self.credential_from {
                    Some(from) => format!(
                        "GET {url}: http status 401: the cache refused the credential from {from}; check it (and that it is for this host)"
                    ),
                    None => format!(
                        "GET {url}: http status 401: the cache asks for a login; pass --netrc-file FILE (machine HOST login NAME password SECRET) or --cache-token-file FILE"
                    ),
                };
                Error::new(Exit::Cache, msg)
            }
            _ => e.into(),
        }
    }
}

impl Source for Direct {
    fn store_path(&self) -> &StorePath {
        &self.store_path
    }
    fn reference(&self) -> Option<&OutputRef> {
        None
    }
    fn token(&self) -> &Secret {
        &self.no_token
    }
    fn cache(&self) -> Box<dyn CacheClient + '_> {
        Box::new(Borrowed(self.cache.as_ref()))
    }
    fn check_store(&self, store: &dyn Store) -> Result<(), Error> {
        match store.reads_nar() {
            true => Ok(()),
            false => Err(Error::usage(
                "--cache cannot use --store nix (it passes FlakeHub's cache credential to nix copy); pick another store",
            )),
        }
    }
    fn explain(&self, e: FetchError) -> Error {
        Direct::explain(self, e)
    }
}

/// The cache `--cache URL` names, with its credential, and the store path.
pub fn open(
    http: &Settings,
    offline: &OfflineOpts,
    store_path: &StorePath,
    url: &str,
) -> Result<Direct, Error> {
    // A --netrc-file may be there for the --mirrors only.
    let netrc_for_cache = offline.netrc_file.is_some() && offline.mirrors.is_empty();
    let creds_given = netrc_for_cache || offline.cache_token_file.is_some();
    let (cache, credential_from): (Box<dyn CacheClient>, _) = if url.starts_with("file://") {
        if creds_given {
            return Err(Error::usage(format!(
                "--netrc-file and --cache-token-file are for an https:// cache, not {url}"
            )));
        }
        let cache = FileCache::new(url).map_err(|e| Error::usage(format!("--cache: {e}")))?;
        if !cache.dir().is_dir() {
            return Err(Error::usage(format!(
                "--cache {url}: {} is not a directory",
                cache.dir().display()
            )));
        }
        (Box::new(cache), None)
    } else {
        let credential = match credential(url, offline) {
            // A --netrc-file given for the mirrors need not name the cache.
            Err(_) if !offline.mirrors.is_empty() && offline.cache_token_file.is_none() => {
                Credential::None
            }
            c => c?,
        };
        let from = credential.from().map(String::from);
        let cache = HttpCache {
            client: Client::new(http)?,
            base: url.to_string(),
            credential,
        };
        (Box::new(cache), from)
    };
    Ok(Direct {
        store_path: store_path.clone(),
        cache,
        credential_from,
        no_token: Secret::new(""),
    })
}

/// Build this run's `--mirror`s (cache/mirror.rs): a `file://` directory,
/// or an HTTP cache whose only credential is its own `machine` entry in
/// `--netrc-file` (never a `default` entry, never the closure token or the
/// `--cache-token-file`). `http://` is allowed for a mirror without
/// `--allow-insecure-http`: what it serves is verified like anything else.
pub fn install_mirrors(http: &Settings, offline: &OfflineOpts) -> Result<(), Error> {
    let mut list = Vec::new();
    for url in &offline.mirrors {
        let client: Box<dyn CacheClient + Send> = if url.starts_with("file://") {
            let cache = FileCache::new(url).map_err(|e| Error::usage(format!("--mirror: {e}")))?;
            if !cache.dir().is_dir() {
                return Err(Error::usage(format!(
                    "--mirror {url}: {} is not a directory",
                    cache.dir().display()
                )));
            }
            Box::new(cache)
        } else {
            let credential = match &offline.netrc_file {
                None => Credential::None,
                Some(file) => {
                    let host = crate::url::url_host(url).unwrap_or_default();
                    let text = read_secret_file(file, "--netrc-file")?;
                    let entries = parse_netrc(&text).map_err(|e| {
                        Error::usage(format!("--netrc-file {}: {e}", file.display()))
                    })?;
                    let own = entries.into_iter().find(|e| {
                        (e.machine.as_deref()).is_some_and(|m| m.eq_ignore_ascii_case(host))
                    });
                    match own {
                        None => Credential::None,
                        Some(e) => Credential::Login {
                            secret: Secret::new(format!(
                                "{}:{}",
                                e.login.as_deref().unwrap_or_default(),
                                e.password.expose()
                            )),
                            from: format!("--netrc-file {} (machine {host})", file.display()),
                        },
                    }
                }
            };
            Box::new(HttpCache {
                client: Client::for_mirror(http)?,
                base: url.clone(),
                credential,
            })
        };
        list.push(crate::cache::mirror::Mirror::new(url, client));
    }
    crate::cache::mirror::install(list)
}

/// The credential of an HTTP cache from `--netrc-file` or
/// `--cache-token-file` (cli.rs allows at most one).
fn credential(url: &str, offline: &OfflineOpts) -> Result<Credential, Error> {
    if let Some(file) = &offline.cache_token_file {
        let text = read_secret_file(file, "--cache-token-file")?;
        let token = text.trim();
        if token.is_empty() {
            return Err(Error::usage(format!(
                "--cache-token-file {}: the file is empty",
                file.display()
            )));
        }
        return Ok(Credential::Bearer {
            secret: Secret::new(token),
            from: format!("--cache-token-file {}", file.display()),
        });
    }
    let Some(file) = &offline.netrc_file else {
        return Ok(Credential::None);
    };
    let host = crate::url::url_host(url).unwrap_or_default();
    let text = read_secret_file(file, "--netrc-file")?;
    let entries = parse_netrc(&text)
        .map_err(|e| Error::usage(format!("--netrc-file {}: {e}", file.display())))?;
    let Some(entry) = lookup(&entries, host) else {
        return Err(Error::usage(format!(
            "--netrc-file {} has no entry for {host} (machine {host} login NAME password SECRET)",
            file.display()
        )));
    };
    Ok(Credential::Login {
        secret: Secret::new(format!(
            "{}:{}",
            entry.login.as_deref().unwrap_or_default(),
            entry.password.expose()
        )),
        from: format!("--netrc-file {} (machine {host})", file.display()),
    })
}

/// A credential file, whole; the error names the file, never its contents.
fn read_secret_file(file: &Path, opt: &str) -> Result<String, Error> {
    let mut text = String::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(1 << 20).read_to_string(&mut text))
        .map_err(|e| Error::usage(format!("{opt} {}: cannot read it: {e}", file.display())))?;
    Ok(text)
}

/// One netrc entry: `machine NAME` (None: `default`), `login`, `password`.
#[derive(Debug)]
struct NetrcEntry {
    machine: Option<String>,
    login: Option<String>,
    password: Secret,
}

/// The netrc format as curl reads it for Nix: white-space separated
/// tokens; `machine NAME` or `default` starts an entry, `login`,
/// `password` and `account` take a value, `macdef NAME` skips to the next
/// blank line; a line starting with `#` is a comment. Errors never quote a
/// value.
fn parse_netrc(text: &str) -> Result<Vec<NetrcEntry>, String> {
    let mut entries: Vec<NetrcEntry> = Vec::new();
    let mut tokens = Vec::new();
    let mut in_macdef = false;
    for line in text.lines() {
        if in_macdef {
            in_macdef = !line.trim().is_empty();
            continue;
        }
        if line.trim_start().starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            if w == "macdef" {
                // The macro's name, then its body up to a blank line.
                words.next();
                in_macdef = true;
                break;
            }
            tokens.push(w);
        }
    }
    let mut it = tokens.into_iter();
    let value = |key: &str, it: &mut std::vec::IntoIter<&str>| {
        it.next()
            .map(String::from)
            .ok_or_else(|| format!("'{key}' at the end of the file has no value"))
    };
    while let Some(t) = it.next() {
        match t {
            "machine" => {
                let m = value("machine", &mut it)?;
                entries.push(NetrcEntry {
                    machine: Some(m),
                    login: None,
                    password: Secret::new(""),
                });
            }
            "default" => entries.push(NetrcEntry {
                machine: None,
                login: None,
                password: Secret::new(""),
            }),
            "login" | "password" | "account" => {
                let v = value(t, &mut it)?;
                let Some(e) = entries.last_mut() else {
                    return Err(format!("'{t}' before any 'machine' or 'default'"));
                };
                match t {
                    "login" => e.login = Some(v),
                    "password" => e.password = Secret::new(v),
                    _ => {}
                }
            }
            _ => return Err("a word that is not a netrc keyword (machine, default, login, password, account, macdef)".to_string()),
        }
    }
    Ok(entries)
}

/// The entry for `host`: the first `machine` with that name (case does
/// not matter), else `default`.
fn lookup<'a>(entries: &'a [NetrcEntry], host: &str) -> Option<&'a NetrcEntry> {
    let named = entries.iter().find(|e| {
        e.machine
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case(host))
    });
    named.or_else(|| entries.iter().find(|e| e.machine.is_none()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "cache.example.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";
    const SP: &str = "/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-nixos-system-pi";

    fn cli(args: &str) -> Result<crate::cli::Cli, Error> {
        let env = crate::cli::Env {
            hostname: "pi".into(),
            user: "me".into(),
            ..Default::default()
        };
        crate::cli::parse_raw(args.split_whitespace())?.validate(&env)
    }

    fn usage(args: &str) -> String {
        let e = cli(args).expect_err(args);
        assert_eq!(e.exit, Exit::Usage, "{args}");
        e.message
    }

    #[test]
    fn cli_takes_a_store_path_a_cache_and_only_the_keys_given() {
        let c = cli(&format!(
            "apply nixos {SP} boot --cache https://c.example/ --trusted-key {KEY} --netrc-file /n"
        ))
        .unwrap();
        let crate::cli::Command::Apply(o) = c.command else {
            panic!("not apply");
        };
        assert_eq!(o.action, crate::options::Action::Boot);
        // No built-in FlakeHub key in this mode.
        let names: Vec<&str> = o
            .trusted_keys
            .keys
            .iter()
            .map(|k| k.name.as_str())
            .collect();
        assert_eq!(names, ["cache.example.org-1"]);
        let target = |o: &crate::options::ApplyOpts| match &o.target {
            crate::options::Target::StorePath { path, cache } => {
                (path.to_absolute(), cache.clone())
            }
            t => panic!("not a store path: {t:?}"),
        };
        // No reference: no version is remembered.
        assert!(o.target.reference().is_none());
        assert_eq!(
            target(&o),
            (SP.to_string(), "https://c.example".to_string())
        );
        assert_eq!(c.offline.netrc_file.as_deref(), Some(Path::new("/n")));
        let hm = cli(&format!(
            "apply home-manager {SP} --cache file:///c --trusted-key {KEY}"
        ));
        assert!(hm.is_ok());
        // fetch and bundle create take the store path where apply does.
        for args in [
            format!("fetch {SP} --cache file:///c --trusted-key {KEY}"),
            format!("bundle create {SP} --cache file:///c --trusted-key {KEY} --output -"),
        ] {
            let o = match cli(&args).unwrap().command {
                crate::cli::Command::Fetch(o) | crate::cli::Command::BundleCreate(o) => o,
                c => panic!("{args}: {c:?}"),
            };
            assert_eq!(
                target(&o),
                (SP.to_string(), "file:///c".to_string()),
                "{args}"
            );
        }
    }

    #[test]
    fn cli_refuses_what_direct_mode_cannot_do() {
        let base = format!("apply nixos {SP} --cache https://c.example");
        let cases = [
            (base.clone(), "--cache needs --trusted-key"),
            (
                format!("apply nixos org/p/0.1 --cache https://c --trusted-key {KEY}"),
                "takes a store path",
            ),
            (
                format!("apply nixos --cache https://c --trusted-key {KEY}"),
                "needs a store path",
            ),
            (
                format!("{base} --trusted-key {KEY} --from b"),
                "cannot be combined",
            ),
            (
                format!("{base} --trusted-key {KEY} --netrc-file a --cache-token-file b"),
                "pick one credential",
            ),
            (
                format!("apply nixos {SP} --cache ftp://c --trusted-key {KEY}"),
                "not an https:// or file://",
            ),
            (
                format!("apply nixos {SP} --cache https://u:pw@c --trusted-key {KEY}"),
                "must not carry a login",
            ),
            (
                "apply nixos org/p/0.1 --netrc-file n".to_string(),
                "are for '… --cache URL'",
            ),
            (
                "status --cache https://c".to_string(),
                "only for 'apply' or 'fetch' or 'bundle'",
            ),
            (
                format!("fetch org/p/0.1 --cache https://c --trusted-key {KEY}"),
                "with --cache, fetch takes a store path",
            ),
            (
                format!("bundle create --cache https://c --trusted-key {KEY} --output o"),
                "bundle create --cache URL needs a store path",
            ),
        ];
        for (args, want) in cases {
            let m = usage(&args);
            assert!(m.contains(want), "{args}: {m}");
            assert!(!m.contains("pw@"), "{m}");
        }
    }

    #[test]
    fn netrc_entries_as_curl_reads_them() {
        let text = "# a comment with password in it\n\
                    machine cache.example.org login alice password s3cret\n\
                    macdef init\ncd /pub\npassword not-this\n\n\
                    machine other.example\n  login bob\n  password hunter2\n\
                    default login anon password anon-pw\n";
        let entries = parse_netrc(text).unwrap();
        assert_eq!(entries.len(), 3);
        let e = lookup(&entries, "CACHE.example.org").unwrap();
        assert_eq!(e.login.as_deref(), Some("alice"));
        assert_eq!(e.password.expose(), "s3cret");
        let e = lookup(&entries, "other.example").unwrap();
        assert_eq!(
            (e.login.as_deref(), e.password.expose()),
            (Some("bob"), "hunter2")
        );
        let e = lookup(&entries, "unknown.example").unwrap();
        assert_eq!(e.login.as_deref(), Some("anon"));
        assert!(lookup(&parse_netrc("machine a login b password c\n").unwrap(), "x").is_none());
    }

    #[test]
    fn netrc_errors_never_quote_a_value() {
        for (text, want) in [
            ("machine h login u password", "'password' at the end"),
            ("login u password p-secret-1", "'login' before any"),
            ("machine h login u passwd p-secret-1", "not a netrc keyword"),
        ] {
            let e = parse_netrc(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
            assert!(!e.contains("p-secret-1") && !e.contains(" u "), "{e}");
        }
        let entries = parse_netrc("machine h login u password p-secret-1").unwrap();
        assert!(!format!("{entries:?}").contains("p-secret-1"));
    }

    #[test]
    fn the_credential_goes_only_to_the_cache_origin() {
        let client = Client::build(&[], true, Default::default()).unwrap();
        let cache = HttpCache {
            client,
            base: "https://cache.example/c".to_string(),
            credential: Credential::Login {
                secret: Secret::new("u:p"),
                from: "--netrc-file f".to_string(),
            },
        };
        assert!(matches!(
            cache.auth("https://cache.example/c/nar/x.nar"),
            Auth::Login(_)
        ));
        for other in [
            "https://s3.example/x.nar",
            "http://cache.example/c/x",
            "https://cache.example:8443/x",
        ] {
            assert!(matches!(cache.auth(other), Auth::None), "{other}");
        }
    }
}

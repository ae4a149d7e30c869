//! The few operations fh-lite needs on `http(s)://` URLs: split into
//! scheme, authority and the rest, and join a reference to a base (no
//! percent-decoding, no path normalisation). [`origin`] uses the HTTP
//! crate's parser, because it decides where a credential may go.

/// `(scheme, authority, rest)`; the rest starts with `/`, `?`, `#` or is empty.
fn split(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some((scheme, &rest[..end], &rest[end..]))
}

/// The authority without any userinfo (a user-given address might have it).
fn without_userinfo(authority: &str) -> &str {
    authority.rsplit_once('@').map_or(authority, |(_, h)| h)
}

/// The host (and port when given) of `url`, for messages.
pub fn host_of(url: &str) -> String {
    split(url)
        .map_or("", |(_, a, _)| without_userinfo(a))
        .to_string()
}

/// The host name of an `http(s)://host[:port]/…` URL, without the port (an
/// IPv6 literal keeps its brackets); None for other schemes or no host.
pub fn url_host(url: &str) -> Option<&str> {
    let (scheme, authority, _) = split(url)?;
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let host = without_userinfo(authority);
    let host = if host.starts_with('[') {
        host.split_inclusive(']').next()?
    } else {
        host.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

/// Where a credential may go: scheme, lower-case host and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

/// The origin of an `http(s)://` URL; the error says what is wrong with it.
pub fn origin(url: &str) -> Result<Origin, String> {
    let uri: ureq::http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let scheme = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => "https",
        Some(s) if s.eq_ignore_ascii_case("http") => "http",
        _ => return Err("expected an https:// address".to_string()),
    };
    let host = match uri.host() {
        Some(h) if !h.is_empty() => h.to_ascii_lowercase(),
        _ => return Err("no host".to_string()),
    };
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    Ok(Origin {
        scheme: scheme.to_string(),
        host,
        port,
    })
}

/// True when `a` and `b` are `http(s)://` URLs of the same origin
/// (scheme, host, port): where a credential meant for `a` may also go.
pub fn same_origin(a: &str, b: &str) -> bool {
    matches!((origin(a), origin(b)), (Ok(x), Ok(y)) if x == y)
}

/// Resolve a `Location` against the URL that answered with it: absolute
/// URLs, scheme-relative `//host/…`, absolute paths and relative paths.
pub fn join_location(base: &str, location: &str) -> Result<String, String> {
    let location = location.trim();
    if location.is_empty() {
        return Err("redirect to an empty Location".to_string());
    }
    let Some((scheme, authority, path)) = split(base) else {
        return Err(format!("cannot resolve Location '{location}'"));
    };
    if location.contains("://") {
        return Ok(location.to_string());
    }
    if let Some(r) = location.strip_prefix("//") {
        return Ok(format!("{scheme}://{r}"));
    }
    if location.starts_with('/') {
        return Ok(format!("{scheme}://{authority}{location}"));
    }
    // Relative to the base path's directory (query and fragment dropped).
    let path = &path[..path.find(['?', '#']).unwrap_or(path.len())];
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    let dir = if dir.is_empty() { "/" } else { dir };
    Ok(format!("{scheme}://{authority}{dir}{location}"))
}

/// The absolute URL of a narinfo's `URL:` field, resolved against the
/// cache base the way Nix does (`{cache}/` + URL; docs/formats.md,
/// "Binary caches"): relative (`nar/x.nar.xz`), host-absolute (`/x`) or absolute.
pub fn nar_url(base: &str, url: &str) -> String {
    if url.contains("://") {
        return url.to_string();
    }
    let base = base.trim_end_matches('/');
    if let Some(rest) = url.strip_prefix('/') {
        // Host-absolute: keep scheme://host[:port] of the base.
        return match split(base) {
            Some((scheme, authority, _)) => format!("{scheme}://{authority}/{rest}"),
            None => format!("{base}/{rest}"),
        };
    }
    format!("{base}/{url}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_urls() {
        assert_eq!(host_of("https://127.0.0.1:8443/f/x?y"), "127.0.0.1:8443");
        assert_eq!(host_of("https://h"), "h");
        assert_eq!(host_of("https://u@h:1?q"), "h:1");
        assert_eq!(host_of("no scheme"), "");
    }

    #[test]
    fn url_host_cases() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            (
                "https",
                "https://cache.flakehub.com",
                Some("cache.flakehub.com"),
            ),
            ("port", "http://127.0.0.1:8081/x", Some("127.0.0.1")),
            ("userinfo", "https://u@h.example/", Some("h.example")),
            ("ipv6", "http://[::1]:80/", Some("[::1]")),
            ("file", "file:///tmp/cache", None),
            ("empty host", "http:///x", None),
        ];
        for (name, url, want) in cases {
            assert_eq!(url_host(url), *want, "{name}");
        }
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let o = |u| origin(u).unwrap();
        assert_eq!(o("https://Api.Example:443/x"), o("https://api.example/y"));
        assert_ne!(o("https://127.0.0.1:8/x"), o("https://localhost:8/x"));
        assert_ne!(o("https://h:8/x"), o("https://h:9/x"));
        assert_ne!(o("https://h/x"), o("http://h:443/x"));
        assert_eq!(o("http://h/x").port, 80);
        assert_eq!(
            origin("ftp://h/x").unwrap_err(),
            "expected an https:// address"
        );
    }

    #[test]
    fn same_origin_cases() {
        let cases: &[(&str, &str, &str, bool)] = &[
            (
                "same",
                "https://c.example/c",
                "https://C.example:443/nar/x",
                true,
            ),
            (
                "other host",
                "https://c.example",
                "https://s3.example/x",
                false,
            ),
            (
                "other port",
                "http://127.0.0.1:8/c",
                "http://127.0.0.1:9/x",
                false,
            ),
            ("other scheme", "https://h/c", "http://h:443/x", false),
            ("not a URL", "https://h/c", "nar/x", false),
        ];
        for (name, a, b, want) in cases {
            assert_eq!(same_origin(a, b), *want, "{name}");
        }
    }

    #[test]
    fn join_location_cases() {
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "absolute",
                "https://a:1/x/y",
                "http://b:2/z",
                "http://b:2/z",
            ),
            ("scheme-relative", "https://a:1/x/y", "//b/z", "https://b/z"),
            ("abs-path", "https://a:1/x/y?q=1", "/z?r", "https://a:1/z?r"),
            ("relative", "https://a:1/x/y?q=1", "w", "https://a:1/x/w"),
            ("relative-root", "https://a:1", "w", "https://a:1/w"),
            ("relative-query", "https://a:1?q=1", "w", "https://a:1/w"),
        ];
        for (name, base, loc, want) in cases {
            assert_eq!(join_location(base, loc).as_deref(), Ok(*want), "{name}");
        }
        assert_eq!(
            join_location("https://a/", " "),
            Err("redirect to an empty Location".to_string())
        );
    }

    #[test]
    fn nar_urls_resolve_against_the_cache_base() {
        let cases = [
            (
                "relative",
                "http://h:1/c",
                "nar/x.nar",
                "http://h:1/c/nar/x.nar",
            ),
            (
                "base with slash",
                "http://h/c/",
                "nar/x.nar",
                "http://h/c/nar/x.nar",
            ),
            (
                "host-absolute",
                "http://h:1/c",
                "/x/y.nar",
                "http://h:1/x/y.nar",
            ),
            (
                "absolute",
                "http://h/c",
                "https://s3/b/y.nar?x=1",
                "https://s3/b/y.nar?x=1",
            ),
            (
                "query kept",
                "http://h",
                "nar/a.nar?hash=b",
                "http://h/nar/a.nar?hash=b",
            ),
        ];
        for (name, base, url, want) in cases {
            assert_eq!(nar_url(base, url), want, "{name}");
        }
    }
}

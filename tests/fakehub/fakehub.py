#!/usr/bin/env python3
"""fakehub: a local stand-in for the FlakeHub API and FlakeHub Cache.

Used by fh-lite's black-box tests, demo and benchmarks; not shipped.
Python 3.11 standard library plus the `openssl` command line tool.

    python3 fakehub.py --config CONFIG.json --port-file PORT_FILE
                       [--tls-dir DIR] [--log LOG.jsonl]
                       [--second-port-file FILE] [--host 127.0.0.1]
                       [--san IP:10.0.2.100 …]

--config FILE        JSON (below).
--port-file FILE     written (atomically) with the port number and a newline
                     once the server accepts connections.
--tls-dir DIR        serve HTTPS: a fresh CA (DIR/ca.pem) and a server
                     certificate for 127.0.0.1 and localhost are made with
                     openssl at start. Without it: plain HTTP.
--san NAME           one more subjectAltName for that certificate (repeatable),
                     e.g. IP:10.0.2.100, the stand-in's address as the device
                     lab's guests reach it through qemu's guestfwd.
--log FILE           request log, one JSON object per line:
                     {"server": "main"|"second", "method": "GET", "path": "/f/…",
                      "auth": "none"|"bearer"|"basic"|"other", "status": 200,
                      "range": "bytes=N-"|null, "bytes": N}
                     "range" is the request's Range header, "bytes" the number
                     of body bytes the answer sends (fewer when it is cut).
                     The token itself is never logged.
--second-port-file F also listen on a second port (plain HTTP, same
                     handlers, "server": "second" in the log): a redirect
                     target on another host:port.

Config:

    {
      "releases": {"org/project": {"0.1.175": {"nixosConfigurations.pi": "/nix/store/…"}}},
      "device_tokens": {"<token>": {"project": "org/project", "version_req": "0.1",
                                    "attribute": "nixosConfigurations.pi"}},
                        # "attribute" may be null (any attribute)
      "cache_dir": "/path/to/binary-cache",   # what `nix copy --to file://…` writes
      "closures": {"/nix/store/root": ["/nix/store/a", …]},  # optional; otherwise
                        # the closure follows References in cache_dir's narinfos
      "closure_token_lifetime": 3600,         # seconds (default 3600)
      "cache_login": {"login": "…", "password": "…"},  # optional: the cache is
                        # "any binary cache" instead of FlakeHub's: it wants
                        # HTTP Basic with exactly this login (the whole
                        # cache, no closure token)
      "cache_bearer": "…",                    # optional: the same with a Bearer token
      "faults": {…}                           # as POST /_control, applied at start
    }

API: GET /f/{org}/{project}/{req}/output/{attr}[?include_token=true], Bearer
device token. 401 for a missing/unknown token; 403 unless the requirement is
the token's own, verbatim, or an exact `=x.y.z` the token's requirement allows,
and the project (and attribute, if bound) match; 404 when no release matches
or the release lacks the attribute. 200: {"attribute_path", "store_path",
"token"} where token is a closure token (only with include_token=true):
JWT-shaped header.payload.signature (HMAC-SHA256), payload {"exp", "iat",
"sub": root store path}.

Cache: GET /nix-cache-info, /<hash>.narinfo, /nar/… with HTTP Basic
flakehub:<closure token>. Missing/expired/invalid token → 401 with body
"User is not authorized for this resource."; a path outside the token's
closure → 403; not in the cache → 404.

Faults (POST /_control with a JSON object, or "faults" in the config; each key
replaces that knob; {"reset": true} clears all):

    "latency_ms": N                     sleep before every answer
    "fail": [{"count": N, "status": 503, "prefix": "/f/", "retry_after": "1",
              "body": "…"}]             fail the next N matching requests
    "truncate": [{"count": N, "prefix": "/nar/", "after": K,
                  "fraction": F, "store_path": "/nix/store/…"}]
                                        send Content-Length of the full body
                                        (of the range, for a 206) but only K
                                        bytes (or that fraction of it, e.g.
                                        0.5), then close; with store_path,
                                        only that path's NAR matches
    "ignore_range": true                answer a Range request with 200 and
                                        the whole body (otherwise `Range:
                                        bytes=N-` on a cache file gets 206 and
                                        `Content-Range: bytes N-(len-1)/len`)
    "range_corrupt": true               a 206 answer's first byte is wrong
    "slow": [{"prefix": "/nar/", "chunk": 32768, "delay_ms": 30, "count": N}]
                                        send a 200 body in chunks of `chunk`
                                        bytes, sleeping before each (count
                                        optional: then every match); with
                                        "bps": B instead of delay_ms, the
                                        bodies of all such answers share one
                                        link of B bytes per second: each
                                        chunk is sent when the link has
                                        carried the chunks before it (of any
                                        connection), paced by the clock, not
                                        by sleeps that add up
    "oversize_json": true               the output endpoint answers 2 MiB JSON
    "bad_store_path": "/etc/passwd"     the output endpoint answers this path
    "omit_token": true                  the output endpoint answers token null
    "closure_token_lifetime": S         closure tokens issued from now on last
                                        S seconds (overrides the config's)
    "closure_token_max_uses": N         a closure token is refused (401) after
                                        N cache requests (expiry, no timing)
    "redirect": [{"prefix": "/nar/", "status": 302, "to": "http://localhost:PORT2",
                  "count": N}]          answer with Location: <to><path>; a
                                        path arriving as /_r/… is routed as …
                                        and never redirected again; only the
                                        main listener redirects
    "absolute_nar_url": "http://localhost:PORT2"
                                        narinfos are served with an absolute
                                        `URL: <value>/_open/<nar url>`, like a
                                        pre-signed object-store link: /_open/…
                                        serves the NAR with no credential and
                                        answers 400 to a request that carries
                                        an Authorization header
GET /_control returns the current knobs.
SIGTERM/SIGINT: clean shutdown.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NOT_AUTHORIZED = b"User is not authorized for this resource."

# ---------------------------------------------------------------- semver

VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


def parse_version(v):
    m = VERSION_RE.match(v)
    if not m:
        return None
    pre = m.group(4)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), pre)


def version_key(v):
    major, minor, patch, pre = v
    # A release sorts after its pre-releases.
    return (major, minor, patch, 1 if pre is None else 0, pre or "")


COMP_RE = re.compile(r"^(=|>=|<=|>|<|~|\^)?\s*(\d+|\*)(?:\.(\d+|\*))?(?:\.(\d+|\*))?(?:-([0-9A-Za-z.-]+))?$")


def comparator_bounds(c):
    """Cargo semantics for one comparator → (lower, lower_inclusive, upper, exact_pre)."""
    m = COMP_RE.match(c.strip())
    if not m:
        raise ValueError(f"bad comparator {c!r}")
    op, ma, mi, pa, pre = m.groups()
    op = op or "^"
    if ma == "*":
        if op not in ("^", "="):
            raise ValueError(f"bad comparator {c!r}")
        return ((0, 0, 0), True, None)
    major = int(ma)
    minor = None if mi in (None, "*") else int(mi)
    patch = None if pa in (None, "*") else int(pa)
    if mi == "*":
        op = "=" if op == "^" else op
    if pa == "*" and op == "^":
        op = "="
    lo = (major, minor or 0, patch or 0)
    if op == "=":
        if minor is None:
            return (lo, True, (major + 1, 0, 0))
        if patch is None:
            return (lo, True, (major, minor + 1, 0))
        return (lo, True, (major, minor, patch, "exact"))
    if op == "^":
        if major > 0 or minor is None:
            return (lo, True, (major + 1, 0, 0))
        if minor > 0 or patch is None:
            return (lo, True, (0, minor + 1, 0))
        return (lo, True, (0, 0, patch + 1))
    if op == "~":
        if minor is None:
            return (lo, True, (major + 1, 0, 0))
        return (lo, True, (major, minor + 1, 0))
    if op == ">=":
        return (lo, True, None)
    if op == ">":
        if minor is None:
            return ((major + 1, 0, 0), True, None)
        if patch is None:
            return ((major, minor + 1, 0), True, None)
        return (lo, False, None)
    if op == "<":
        return ((0, 0, 0), True, ("lt", lo))
    if op == "<=":
        if minor is None:
            return ((0, 0, 0), True, ("lt", (major + 1, 0, 0)))
        if patch is None:
            return ((0, 0, 0), True, ("lt", (major, minor + 1, 0)))
        return ((0, 0, 0), True, ("le", lo))
    raise ValueError(f"bad comparator {c!r}")


def comparator_matches(c, v):
    lo, lo_incl, hi = comparator_bounds(c)
    core = v[:3]
    if lo_incl and core < lo or not lo_incl and core <= lo:
        return False
    if hi is None:
        return True
    if len(hi) == 4:  # exact x.y.z
        return core == hi[:3]
    if hi[0] == "lt":
        return core < hi[1]
    if hi[0] == "le":
        return core <= hi[1]
    return core < hi


def req_matches(req, version):
    """Does Cargo-style requirement `req` allow version string `version`?"""
    v = parse_version(version)
    if v is None:
        return False
    req = req.strip()
    if req == "*":
        return v[3] is None
    comps = [c for c in req.split(",") if c.strip()]
    if not comps:
        return False
    for c in comps:
        if not comparator_matches(c, v):
            return False
    if v[3] is not None:
        # Pre-releases only match a comparator naming the same x.y.z with a pre-release.
        return any(
            (m := COMP_RE.match(c.strip())) and m.group(5) and m.group(2) != "*"
            and (int(m.group(2)), int(m.group(3) or 0), int(m.group(4) or 0)) == v[:3]
            for c in comps
        )
    return True


EXACT_RE = re.compile(r"^=\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$")


def token_allows(token_req, req):
    """The resolve-only rule: the token's requirement verbatim, or an exact
    =x.y.z that the token's requirement allows."""
    if req == token_req:
        return True
    if EXACT_RE.match(req):
        return req_matches(token_req, req[1:])
    return False


# ---------------------------------------------------------------- closure tokens


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class TokenIssuer:
    def __init__(self, lifetime):
        self.key = secrets.token_bytes(32)
        self.lifetime = lifetime

    def issue(self, root, lifetime=None):
        now = int(time.time())
        exp = now + (self.lifetime if lifetime is None else int(lifetime))
        header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        # jti: two tokens for the same path in the same second still differ.
        claims = {"iat": now, "exp": exp, "sub": root, "jti": secrets.token_hex(8)}
        payload = b64url(json.dumps(claims).encode())
        sig = b64url(hmac.new(self.key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        return f"{header}.{payload}.{sig}"

    def verify(self, token):
        """The root store path the token is for, or None."""
        try:
            header, payload, sig = token.split(".")
            want = b64url(hmac.new(self.key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
            if not hmac.compare_digest(want, sig):
                return None
            claims = json.loads(b64url_decode(payload))
            if int(claims["exp"]) <= time.time():
                return None
            return claims["sub"]
        except Exception:
            return None


# ---------------------------------------------------------------- binary cache


def parse_narinfo(text):
    fields = {}
    for line in text.splitlines():
        if ": " in line:
            k, v = line.split(": ", 1)
            fields[k] = v
    return fields


class Cache:
    """A `nix copy --to file://DIR` directory: hash → narinfo, NAR URL → hash."""

    def __init__(self, root, closures):
        self.root = root
        self.narinfo = {}  # hash part → fields
        self.nar_owner = {}  # "nar/…" → hash part
        self.closures = closures or {}
        self.closure_memo = {}  # root path → frozenset of hash parts
        if root:
            for name in os.listdir(root):
                if name.endswith(".narinfo"):
                    with open(os.path.join(root, name)) as f:
                        fields = parse_narinfo(f.read())
                    h = name[: -len(".narinfo")]
                    self.narinfo[h] = fields
                    if "URL" in fields:
                        self.nar_owner[fields["URL"]] = h

    def closure_hashes(self, root_path):
        """Hash parts of the closure of root_path (computed once per root:
        the cache does not change while serving)."""
        hit = self.closure_memo.get(root_path)
        if hit is None:
            hit = self.closure_memo[root_path] = self._closure_hashes(root_path)
        return hit

    def _closure_hashes(self, root_path):
        if root_path in self.closures:
            paths = set(self.closures[root_path]) | {root_path}
            return frozenset(os.path.basename(p)[:32] for p in paths)
        seen = set()
        todo = [os.path.basename(root_path)[:32]]
        while todo:
            h = todo.pop()
            if h in seen:
                continue
            seen.add(h)
            refs = self.narinfo.get(h, {}).get("References", "")
            todo.extend(r[:32] for r in refs.split())
        return frozenset(seen)


# ---------------------------------------------------------------- server state


class State:
    def link_slot(self, size, bps):
        """Reserve the shared slow link for `size` bytes at `bps`: the
        seconds to wait until they have crossed it (after every byte
        reserved before them)."""
        with self.lock:
            now = time.monotonic()
            self.link_free = max(now, self.link_free) + size / bps
            return self.link_free - now

    def __init__(self, config, log_path):
        self.lock = threading.Lock()
        self.link_free = 0.0
        self.releases = config.get("releases", {})
        self.device_tokens = config.get("device_tokens", {})
        self.issuer = TokenIssuer(int(config.get("closure_token_lifetime", 3600)))
        self.cache = Cache(config.get("cache_dir"), config.get("closures"))
        self.log_path = log_path
        self.cache_login = config.get("cache_login")
        self.cache_bearer = config.get("cache_bearer")
        self.faults = {}
        self.token_uses = {}
        self.apply_faults(config.get("faults") or {})

    def apply_faults(self, knobs):
        with self.lock:
            if knobs.get("reset"):
                self.faults = {}
            for k, v in knobs.items():
                if k == "reset":
                    continue
                if k in ("fail", "truncate", "redirect", "slow"):
                    v = [dict(r) for r in (v if isinstance(v, list) else [v])]
                self.faults[k] = v

    def use_token(self, token):
        """Count one cache request with `token`; False once it is used up
        (the closure_token_max_uses knob: expiry without timing)."""
        with self.lock:
            limit = self.faults.get("closure_token_max_uses")
            n = self.token_uses.get(token, 0) + 1
            self.token_uses[token] = n
            return limit is None or n <= int(limit)

    def take_rule(self, kind, path, owner=None):
        """The first rule of `kind` matching `path` (and, for a rule naming a
        store_path, whose NAR `owner` hash part is that path's) with count
        left (decremented)."""
        with self.lock:
            for r in self.faults.get(kind, []):
                if not path.startswith(r.get("prefix", "")):
                    continue
                if "store_path" in r and os.path.basename(r["store_path"])[:32] != owner:
                    continue
                count = r.get("count")
                if count is not None:
                    if count <= 0:
                        continue
                    r["count"] = count - 1
                return dict(r)
        return None

    def log(self, entry):
        if not self.log_path:
            return
        line = json.dumps(entry) + "\n"
        with self.lock:
            with open(self.log_path, "a") as f:
                f.write(line)


RANGE_RE = re.compile(r"^bytes=(\d+)-$")


def range_start(header):
    """N of a `Range: bytes=N-` header; None for no header or another form."""
    m = RANGE_RE.match((header or "").strip())
    return int(m.group(1)) if m else None


def cut_length(rule, n):
    """How many of `n` body bytes a truncate rule lets through."""
    if "fraction" in rule:
        return min(n, int(n * float(rule["fraction"])))
    return min(n, int(rule.get("after", 0)))


def auth_kind(header):
    if not header:
        return "none", None
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return "bearer", value.strip()
    if scheme == "basic":
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except Exception:
            return "basic", None
        return "basic", password if user == "flakehub" else None
    return "other", None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fakehub/1"
    # Headers and body go out in separate writes: with Nagle's algorithm the
    # body waits for the client's delayed ACK (about 40 ms per request on a
    # kept-alive connection).
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # quiet: the JSON log is the record
        pass

    @property
    def state(self):
        return self.server.state

    # -- plumbing

    def send(self, status, body=b"", ctype="text/plain", headers=None):
        """Answer with `body`: bytes, str, or an open file (streamed, so a
        1 GiB NAR does not sit in memory)."""
        latency = self.state.faults.get("latency_ms")
        if latency:
            time.sleep(latency / 1000)
        if isinstance(body, str):
            body = body.encode()
        stream = None
        if not isinstance(body, bytes):
            stream, body_len = body, os.fstat(body.fileno()).st_size
        else:
            body_len = len(body)
        headers = dict(headers or {})
        faults = self.state.faults
        rng = self.headers.get("Range")
        start = 0
        if status == 200 and stream is not None and not faults.get("ignore_range"):
            first = range_start(rng)
            if first is not None and first < body_len:
                status, start = 206, first
                headers["Content-Range"] = f"bytes {first}-{body_len - 1}/{body_len}"
            elif first is not None:
                headers["Content-Range"] = f"bytes */{body_len}"
                status, stream, body, body_len = 416, None, b"", 0
        length = body_len - start
        owner = self.state.cache.nar_owner.get(self.route_path.lstrip("/"))
        trunc = self.state.take_rule("truncate", self.route_path, owner) if status in (200, 206) else None
        slow = self.state.take_rule("slow", self.route_path, owner) if status == 200 else None
        sending = 0 if self.command == "HEAD" else cut_length(trunc, length) if trunc else length
        corrupt = status == 206 and faults.get("range_corrupt")
        # Logged before anything is sent: once the client has an answer,
        # its line is in the log.
        if self.route_path != "/_control":
            self.state.log(
                {
                    "server": self.server.name,
                    "method": self.command,
                    "path": self.path,
                    "auth": self.auth[0],
                    "status": status,
                    "range": rng,
                    "bytes": sending,
                }
            )
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        for k, v in headers.items():
            self.send_header(k, v)
        if trunc:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        if stream:
            stream.seek(start)
        chunk = max(1, int(slow.get("chunk", 32768))) if slow else 1 << 20
        bps = float(slow["bps"]) if slow and slow.get("bps") else None
        sent = 0
        while sent < sending:
            want = min(chunk, sending - sent)
            piece = stream.read(want) if stream else body[start + sent : start + sent + want]
            if not piece:
                break
            if corrupt and sent == 0:
                piece = bytes([piece[0] ^ 0xFF]) + piece[1:]
            if bps:
                time.sleep(self.state.link_slot(len(piece), bps))
            elif slow:
                time.sleep(slow.get("delay_ms", 30) / 1000)
            self.wfile.write(piece)
            if slow:
                self.wfile.flush()
            sent += len(piece)
        if trunc:
            self.wfile.flush()
            self.close_connection = True

    def json(self, status, obj):
        self.send(status, json.dumps(obj), "application/json")

    def do_HEAD(self):
        self.do_GET()

    def do_POST(self):
        self.parse()
        if self.route_path != "/_control":
            return self.send(404, "not found\n")
        n = int(self.headers.get("Content-Length") or 0)
        try:
            knobs = json.loads(self.rfile.read(n) or b"{}")
        except ValueError:
            return self.send(400, "bad JSON\n")
        self.state.apply_faults(knobs)
        self.json(200, self.state.faults)

    def parse(self):
        self.auth = auth_kind(self.headers.get("Authorization"))
        path, _, query = self.path.partition("?")
        self.redirected = path.startswith("/_r/")
        self.route_path = path[len("/_r"):] if self.redirected else path
        self.query = urllib.parse.parse_qs(query)

    def do_GET(self):
        self.parse()
        p = self.route_path
        if p == "/_control":
            return self.json(200, self.state.faults)
        rule = self.state.take_rule("fail", p)
        if rule:
            headers = {}
            if "retry_after" in rule:
                headers["Retry-After"] = str(rule["retry_after"])
            return self.send(int(rule.get("status", 503)), rule.get("body", "injected failure\n"), headers=headers)
        if not self.redirected and self.server.name == "main":
            rule = self.state.take_rule("redirect", p)
            if rule:
                return self.send(
                    int(rule.get("status", 302)),
                    "",
                    headers={"Location": rule["to"].rstrip("/") + self.path},
                )
        if p.startswith("/f/"):
            return self.output()
        if p.startswith("/_open/"):
            return self.open_get(p[len("/_open/"):])
        return self.cache_get(p)

    # -- API

    def output(self):
        parts = self.route_path.split("/")
        # ['', 'f', org, project, req, 'output', attr]
        if len(parts) != 7 or parts[5] != "output":
            return self.send(404, "no such endpoint\n")
        org, project, req, attr = (urllib.parse.unquote(x) for x in (parts[2], parts[3], parts[4], parts[6]))
        kind, token = self.auth
        if kind != "bearer" or not token or token not in self.state.device_tokens:
            return self.send(401, NOT_AUTHORIZED)
        dev = self.state.device_tokens[token]
        proj = f"{org}/{project}"
        if dev.get("project") != proj:
            return self.json(403, {"message": f"this device token is not for project {proj}"})
        if dev.get("attribute") not in (None, attr):
            return self.json(403, {"message": f"this device token is not for attribute {attr}"})
        if not token_allows(dev.get("version_req", ""), req):
            return self.json(
                403,
                {"message": f"version requirement {req} is neither the token's requirement nor an exact version it allows"},
            )
        releases = self.state.releases.get(proj, {})
        try:
            matching = [v for v in releases if req_matches(req, v)]
        except ValueError:
            return self.json(400, {"message": f"invalid version requirement {req}"})
        matching.sort(key=lambda v: version_key(parse_version(v)), reverse=True)
        if not matching:
            return self.json(404, {"message": f"no release of {proj} matches {req}"})
        newest = matching[0]
        store_path = releases[newest].get(attr)
        if store_path is None:
            return self.json(404, {"message": f"release {newest} of {proj} has no output {attr}"})
        faults = self.state.faults
        if faults.get("oversize_json"):
            filler = "x" * (2 << 20)
            return self.json(200, {"attribute_path": attr, "store_path": store_path, "filler": filler})
        if faults.get("bad_store_path"):
            store_path = faults["bad_store_path"]
        token = None
        if self.query.get("include_token") == ["true"] and not faults.get("omit_token"):
            token = self.state.issuer.issue(
                store_path, self.state.faults.get("closure_token_lifetime")
            )
        self.json(200, {"attribute_path": attr, "store_path": store_path, "token": token})

    # -- cache

    def own_login(self):
        """None when the cache takes closure tokens; else whether the
        request carries the configured login (cache_login / cache_bearer)."""
        login, bearer = self.state.cache_login, self.state.cache_bearer
        if login is None and bearer is None:
            return None
        header = self.headers.get("Authorization") or ""
        scheme, _, value = header.partition(" ")
        if login is not None and scheme.lower() == "basic":
            try:
                sent = base64.b64decode(value.strip(), validate=True).decode()
            except Exception:
                return False
            want = f"{login.get('login', '')}:{login.get('password', '')}"
            return hmac.compare_digest(sent, want)
        if bearer is not None and scheme.lower() == "bearer":
            return hmac.compare_digest(value.strip(), bearer)
        return False

    def cache_get(self, p):
        own = self.own_login()
        if own is not None:
            return self.cache_serve(p, None) if own else self.send(401, NOT_AUTHORIZED)
        kind, token = self.auth
        root = self.state.issuer.verify(token) if kind == "basic" and token else None
        if root is not None and not self.state.use_token(token):
            root = None
        if root is None:
            return self.send(401, NOT_AUTHORIZED)
        return self.cache_serve(p, root)

    def cache_serve(self, p, root):
        """Serve the cache; `root` None: every path (an own login)."""
        cache = self.state.cache
        if not cache.root:
            return self.send(404, "no cache configured\n")
        if p == "/nix-cache-info":
            return self.file(os.path.join(cache.root, "nix-cache-info"), "text/x-nix-cache-info")
        allowed = cache.closure_hashes(root) if root is not None else frozenset(cache.narinfo)
        name = p.lstrip("/")
        if re.fullmatch(r"[0-9a-z]{32}\.narinfo", name):
            h = name[:32]
            if h not in allowed:
                return self.send(403, "path is outside this token's closure\n")
            base = self.state.faults.get("absolute_nar_url")
            if base:
                return self.narinfo_with_absolute_url(os.path.join(cache.root, name), base)
            return self.file(os.path.join(cache.root, name), "text/x-nix-narinfo")
        if name.startswith("nar/") and "/.." not in name and "\\" not in name:
            owner = cache.nar_owner.get(name)
            if owner is None:
                return self.send(404, "not found\n")
            if owner not in allowed:
                return self.send(403, "path is outside this token's closure\n")
            return self.file(os.path.join(cache.root, name), "application/x-nix-nar")
        return self.send(404, "not found\n")

    def narinfo_with_absolute_url(self, path, base):
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            return self.send(404, "not found\n")
        prefix = base.rstrip("/") + "/_open/"
        text = re.sub(r"(?m)^URL: ", "URL: " + prefix, text)
        self.send(200, text, "text/x-nix-narinfo")

    def open_get(self, name):
        """A pre-signed link: the NAR for anyone, no credential accepted."""
        if self.auth[0] != "none":
            return self.send(400, "a pre-signed link takes no Authorization header\n")
        cache = self.state.cache
        if not name.startswith("nar/") or "/.." in name or cache.nar_owner.get(name) is None:
            return self.send(404, "not found\n")
        return self.file(os.path.join(cache.root, name), "application/x-nix-nar")

    def file(self, path, ctype):
        try:
            f = open(path, "rb")
        except OSError:
            return self.send(404, "not found\n")
        with f:
            self.send(200, f, ctype)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog is 5: a client opening many
    # connections at once would see SYNs dropped and 1 s retransmits.
    request_queue_size = 128

    def __init__(self, addr, state, name, tls_context=None):
        self.state = state
        self.name = name
        self.tls_context = tls_context
        super().__init__(addr, Handler)

    def finish_request(self, request, client_address):
        # The TLS handshake runs here, in the request's own thread, so a
        # client that never completes it cannot block the accept loop.
        if self.tls_context is not None:
            try:
                request.settimeout(30)
                request = self.tls_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        try:
            super().finish_request(request, client_address)
        except (ConnectionError, ssl.SSLError, TimeoutError):
            pass

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def make_tls(dir_, extra_san=()):
    os.makedirs(dir_, exist_ok=True)

    def run(*args):
        subprocess.run(["openssl", *args], check=True, cwd=dir_, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=fakehub test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    with open(os.path.join(dir_, "ext.cnf"), "w") as f:
        san = ",".join(["IP:127.0.0.1", "DNS:localhost", *extra_san])
        f.write(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
                "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(dir_, "server.pem"), os.path.join(dir_, "server.key"))
    return ctx


def write_atomic(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description="local FlakeHub API + cache stand-in")
    ap.add_argument("--config", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--tls-dir")
    ap.add_argument("--log")
    ap.add_argument("--second-port-file")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--san", action="append", default=[])
    args = ap.parse_args()

    with open(args.config) as f:
        config = json.load(f)
    state = State(config, args.log)
    tls = make_tls(args.tls_dir, args.san) if args.tls_dir else None

    servers = [Server((args.host, 0), state, "main", tls)]
    if args.second_port_file:
        servers.append(Server((args.host, 0), state, "second", None))

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True) for s in servers]
    for t in threads:
        t.start()
    if args.second_port_file:
        write_atomic(args.second_port_file, f"{servers[1].server_address[1]}\n")
    write_atomic(args.port_file, f"{servers[0].server_address[1]}\n")
    while not stop.wait(0.2):
        pass
    for s in servers:
        s.shutdown()
        s.server_close()


if __name__ == "__main__":
    main()

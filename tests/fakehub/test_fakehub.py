"""Unit tests for the stand-in's pure parts: python3 -m unittest tests/fakehub/test_fakehub.py"""

import base64
import http.client
import json
import os
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakehub  # noqa: E402


class Semver(unittest.TestCase):
    def test_requirements(self):
        cases = [
            ("0.1", "0.1.175", True), ("0.1", "0.2.0", False), ("0.1", "0.1.0", True),
            ("=0.1.175", "0.1.175", True), ("=0.1.175", "0.1.176", False),
            ("0.1.123", "0.1.175", True), ("0.1.123", "0.1.100", False), ("0.1.123", "0.2.0", False),
            ("0.1.*", "0.1.9", True), ("0.1.*", "0.2.0", False),
            ("*", "9.9.9", True), ("*", "1.0.0-rc.1", False),
            ("~0.1", "0.1.5", True), ("~0.1", "0.2.0", False),
            ("^0.1", "0.1.7", True), ("^0.1", "0.2.0", False),
            ("1.2", "1.9.0", True), ("1.2", "2.0.0", False), ("1.2", "1.1.9", False),
            ("~1.2.3", "1.2.9", True), ("~1.2.3", "1.3.0", False),
            (">=1.0, <2", "1.5.0", True), (">=1.0, <2", "2.0.0", False),
            ("^0.0.3", "0.0.3", True), ("^0.0.3", "0.0.4", False),
            ("=1.2", "1.2.5", True), ("=1.2", "1.3.0", False),
            (">1.2", "1.2.9", False), (">1.2", "1.3.0", True),
            ("<=1.2", "1.2.9", True), ("<=1.2", "1.3.0", False),
            ("=1.0.0-rc.1", "1.0.0-rc.1", True),
        ]
        for req, version, want in cases:
            with self.subTest(req=req, version=version):
                self.assertEqual(fakehub.req_matches(req, version), want)

    def test_resolve_only_rule(self):
        cases = [
            ("0.1", "0.1", True), ("0.1", "=0.1.175", True), ("0.1", "0.1.123", False),
            ("0.1", "=0.2.0", False), ("0.1", "=0.1", False), ("0.1", "*", False),
        ]
        for token_req, req, want in cases:
            with self.subTest(token_req=token_req, req=req):
                self.assertEqual(fakehub.token_allows(token_req, req), want)


class ClosureTokens(unittest.TestCase):
    def test_roundtrip_and_tamper(self):
        issuer = fakehub.TokenIssuer(60)
        t = issuer.issue("/nix/store/x-root")
        self.assertEqual(issuer.verify(t), "/nix/store/x-root")
        h, p, s = t.split(".")
        self.assertIsNone(issuer.verify(f"{h}.{p}.{s[:-2]}AA"))
        self.assertIsNone(fakehub.TokenIssuer(60).verify(t))
        expired = fakehub.TokenIssuer(-1)
        self.assertIsNone(expired.verify(expired.issue("r")))


class Ranges(unittest.TestCase):
    def test_range_start_and_cut_length(self):
        self.assertEqual(fakehub.range_start("bytes=500-"), 500)
        self.assertEqual(fakehub.range_start(" bytes=0- "), 0)
        for h in (None, "", "bytes=1-2", "bytes=-5", "items=1-", "bytes=a-"):
            self.assertIsNone(fakehub.range_start(h), h)
        self.assertEqual(fakehub.cut_length({"fraction": 0.5}, 1001), 500)
        self.assertEqual(fakehub.cut_length({"after": 64}, 1000), 64)
        self.assertEqual(fakehub.cut_length({"after": 5000}, 1000), 1000)


class Serving(unittest.TestCase):
    """The cache over a real socket: cut bodies, 206 answers, the log."""

    H = "0123456789abcdfghijklmnpqrsvwxyz"

    def setUp(self):
        import tempfile

        self.tmp = tempfile.TemporaryDirectory()
        cache = os.path.join(self.tmp.name, "cache")
        os.makedirs(os.path.join(cache, "nar"))
        self.data = bytes(i * 7 % 251 for i in range(1000))
        with open(os.path.join(cache, "nar", "x.nar"), "wb") as f:
            f.write(self.data)
        with open(os.path.join(cache, f"{self.H}.narinfo"), "w") as f:
            f.write(f"StorePath: /nix/store/{self.H}-x\nURL: nar/x.nar\nReferences: \n")
        self.log = os.path.join(self.tmp.name, "log.jsonl")
        self.state = fakehub.State({"cache_dir": cache}, self.log)
        self.server = fakehub.Server(("127.0.0.1", 0), self.state, "main")
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        token = self.state.issuer.issue(f"/nix/store/{self.H}-x")
        self.auth = "Basic " + base64.b64encode(f"flakehub:{token}".encode()).decode()

    def tearDown(self):
        self.server.shutdown()
        self.server.server_close()
        self.tmp.cleanup()

    def get(self, range_=None):
        c = http.client.HTTPConnection("127.0.0.1", self.server.server_address[1], timeout=10)
        headers = {"Authorization": self.auth}
        if range_:
            headers["Range"] = range_
        c.request("GET", "/nar/x.nar", headers=headers)
        r = c.getresponse()
        try:
            body = r.read()
        except http.client.IncompleteRead as e:
            body = e.partial
        c.close()
        return r, body

    def logged(self):
        with open(self.log) as f:
            return [(e["status"], e["range"], e["bytes"]) for e in map(json.loads, f)]

    def test_cut_then_resume(self):
        self.state.apply_faults(
            {"truncate": [{"count": 1, "fraction": 0.5, "store_path": f"/nix/store/{self.H}-x"}]}
        )
        r, body = self.get()
        self.assertEqual((r.status, r.headers["Content-Length"], body), (200, "1000", self.data[:500]))
        r, body = self.get("bytes=500-")
        self.assertEqual(r.status, 206)
        self.assertEqual(r.headers["Content-Range"], "bytes 500-999/1000")
        self.assertEqual(body, self.data[500:])
        r, _ = self.get("bytes=1000-")
        self.assertEqual((r.status, r.headers["Content-Range"]), (416, "bytes */1000"))
        self.assertEqual(self.logged(), [(200, None, 500), (206, "bytes=500-", 500), (416, "bytes=1000-", 0)])

    def test_own_login_replaces_closure_tokens(self):
        self.state.cache_login = {"login": "deploy", "password": "pw-1"}
        basic = lambda s: "Basic " + base64.b64encode(s.encode()).decode()
        for auth, want in [
            (basic("deploy:pw-1"), 200),
            (basic("deploy:pw-2"), 401),
            (basic("other:pw-1"), 401),
            (self.auth, 401),  # a closure token is not this cache's login
            ("Bearer pw-1", 401),
        ]:
            self.auth = auth
            self.assertEqual(self.get()[0].status, want, auth)

    def test_a_rule_for_another_path_does_not_cut(self):
        self.state.apply_faults({"truncate": [{"fraction": 0.5, "store_path": "/nix/store/" + "1" * 32 + "-y"}]})
        self.assertEqual(self.get()[1], self.data)

    def test_ignored_and_corrupt_ranges(self):
        self.state.apply_faults({"ignore_range": True})
        r, body = self.get("bytes=10-")
        self.assertEqual((r.status, body), (200, self.data))
        self.state.apply_faults({"ignore_range": False, "range_corrupt": True})
        r, body = self.get("bytes=10-")
        self.assertEqual(r.status, 206)
        self.assertEqual(body[0], self.data[10] ^ 0xFF)
        self.assertEqual(body[1:], self.data[11:])


if __name__ == "__main__":
    unittest.main()

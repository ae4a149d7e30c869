"""Unit tests for the stand-in's pure parts: python3 -m unittest tests/fakehub/test_fakehub.py"""

import os
import sys
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


if __name__ == "__main__":
    unittest.main()

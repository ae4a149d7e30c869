#!/usr/bin/env python3
"""Write a netrc for `nix copy` holding the closure token of a FlakeHub
stand-in release: resolve REF with the device token (read from a file, never
from argv) and `?include_token=true`, then write `machine HOST login flakehub
password <closure token>` to OUT with mode 0600. Prints nothing secret.

    netrc.py API_URL ORG/PROJECT/REQ ATTR DEVICE_TOKEN_FILE OUT
"""

import json
import os
import sys
import urllib.parse
import urllib.request


def main():
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    api, ref, attr, token_file, out = sys.argv[1:]
    with open(token_file) as f:
        device = f.read().strip()
    req = urllib.request.Request(
        f"{api.rstrip('/')}/f/{ref}/output/{urllib.parse.quote(attr)}?include_token=true",
        headers={"Authorization": f"Bearer {device}"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        token = json.load(r).get("token")
    if not token:
        sys.exit(f"netrc.py: {api} returned no closure token for {ref}#{attr}")
    host = urllib.parse.urlsplit(api).hostname
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"machine {host}\nlogin flakehub\npassword {token}\n")


if __name__ == "__main__":
    main()

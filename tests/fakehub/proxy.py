#!/usr/bin/env python3
"""A minimal HTTP CONNECT proxy on 127.0.0.1, for fh-lite's black-box tests.

    proxy.py --port-file F --log LOG

Tunnels `CONNECT host:port` to the target (loopback targets only) and
appends one line per tunnel to LOG: the target, never anything of what
flows through it (that is TLS anyway). Any other method gets 405, so a
client that does not use CONNECT for https shows up as a failure.
SIGTERM stops it.
"""

import argparse
import os
import select
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_CONNECT(self):
        host, _, port = self.path.rpartition(":")
        if host not in ("127.0.0.1", "localhost", "[::1]"):
            self.send_error(403, "only loopback targets")
            return
        try:
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        except OSError as e:
            self.send_error(502, str(e))
            return
        with self.server.lock:
            with open(self.server.log_path, "a") as f:
                f.write(f"CONNECT {self.path}\n")
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        client = self.connection
        try:
            while True:
                r, _, _ = select.select([client, upstream], [], [], 30)
                if not r:
                    break
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    (upstream if s is client else client).sendall(data)
        except OSError:
            pass
        finally:
            upstream.close()
            self.close_connection = True

    def refuse(self):
        self.send_error(405, "this proxy only tunnels (CONNECT)")

    do_GET = do_POST = do_HEAD = refuse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.lock = threading.Lock()
    server.log_path = args.log
    open(args.log, "a").close()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, args.port_file)
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Cold starts of a release function with its master key in plain text and sealed under AWS KMS.

Both configurations fetch the JWKS at init from a server on loopback (plain HTTP, as the vault allows for
a loopback host), so the difference between them is what KMS adds: one `Decrypt` through aws-sdk-kms to a
local KMS-compatible server (moto), with the client set-up it takes. Cold starts are interleaved (plain,
sealed, plain, ...) so both meet the same machine. A cold start is the time from just before the process
is spawned to its first `next` call on the Runtime API (the end of Lambda's init phase), measured here, so
it includes this script's spawn overhead (the same for both).

    python3 bench/cold_start_kms.py --bin target/release/proxy --runs 30

Prints a Markdown table (BENCHMARKS.md, "Cold start with the key ring sealed under KMS").
"""

import argparse
import base64
import http.server
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASTER_KEY = "4f1c2b3a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708"
STACK = "cold-start-bench"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listens on port {port}")


class Arrivals:
    """The Runtime API's `next` calls: the first of each process marks the end of its init."""

    def __init__(self):
        self.cond = threading.Condition()
        self.at = None

    def arrived(self):
        with self.cond:
            if self.at is None:
                self.at = time.perf_counter()
            self.cond.notify_all()

    def wait(self, seconds):
        with self.cond:
            self.cond.wait_for(lambda: self.at is not None, seconds)
            at, self.at = self.at, None
            return at


def serve(handler_cls, port):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler_cls)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default="target/release/proxy")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    kms_port = free_port()
    moto = subprocess.Popen(["moto_server", "-p", str(kms_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(kms_port)
        kms = boto3.client("kms", endpoint_url=f"http://127.0.0.1:{kms_port}", region_name="us-east-1",
                           aws_access_key_id="local", aws_secret_access_key="local")
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        sealed = kms.encrypt(KeyId=key_id, Plaintext=MASTER_KEY.encode(),
                             EncryptionContext={"purpose": "token-vault-keyring", "stack": STACK})
        ciphertext = base64.b64encode(sealed["CiphertextBlob"]).decode()

        jwks = open(os.path.join(ROOT, "tests/fixtures/jwks.json"), "rb").read()

        class Jwks(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(jwks)))
                self.end_headers()
                self.wfile.write(jwks)

            def log_message(self, *_):
                pass

        arrivals = Arrivals()

        class RuntimeApi(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                arrivals.arrived()
                # Hold the call: the process is killed once its init is measured.
                time.sleep(30)

            def log_message(self, *_):
                pass

        jwks_port, api_port = free_port(), free_port()
        serve(Jwks, jwks_port)
        serve(RuntimeApi, api_port)

        common = {
            "PATH": os.environ.get("PATH", ""),
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{api_port}",
            "AWS_LAMBDA_FUNCTION_NAME": "cold-start",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_LOG_FORMAT": "JSON",
            "AWS_LAMBDA_LOG_LEVEL": "WARN",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:1",
            "VAULT_SECRETS_TABLE": "secrets",
            "VAULT_AUDIT_TABLE": "audit",
            "VAULT_KEYS_TABLE": "keys",
            "VAULT_JWKS_URL": f"http://127.0.0.1:{jwks_port}/.well-known/jwks.json",
            "VAULT_JWT_ISSUER": "https://issuer.example/",
            "VAULT_JWT_AUDIENCE": "https://vault.example",
            "VAULT_IDP_PROFILE": "rfc9068",
            "VAULT_MACHINE_CLAIM": "sub=client_id",
        }
        configs = {
            "plain key": {**common, "VAULT_MASTER_KEY": MASTER_KEY},
            "sealed under KMS": {**common, "VAULT_KEYRING_CIPHERTEXT": ciphertext, "VAULT_KEYRING_STACK": STACK,
                                 "VAULT_KMS_KEY_ARN": key_id,
                                 "AWS_ENDPOINT_URL_KMS": f"http://127.0.0.1:{kms_port}"},
        }
        times = {name: [] for name in configs}
        for i in range(args.runs + 1):
            for name, env in configs.items():
                started = time.perf_counter()
                proc = subprocess.Popen([args.bin], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                at = arrivals.wait(20)
                proc.kill()
                err, _ = proc.communicate()
                if at is None:
                    sys.exit(f"{name}: no next call; the function said: {err.decode(errors='replace')[-2000:]}")
                if i > 0:  # the first round warms the page cache
                    times[name].append((at - started) * 1000)

        def pct(xs, p):
            xs = sorted(xs)
            return xs[round((len(xs) - 1) * p)]

        print(f"| Key ring ({os.path.basename(args.bin)}) | Cold starts | p50 (ms) | p90 (ms) | min (ms) |")
        print("|---|---|---|---|---|")
        for name, xs in times.items():
            print(f"| {name} | {len(xs)} | {statistics.median(xs):.1f} | {pct(xs, 0.9):.1f} | {min(xs):.1f} |")
        plain, sealed_ = statistics.median(times["plain key"]), statistics.median(times["sealed under KMS"])
        print(f"\nKMS adds {sealed_ - plain:.1f} ms at the median.")
    finally:
        moto.kill()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Cold starts of every HTTP function, as a local stack runs them and as a deployed stack does.

Two configurations, each cold start of each function interleaved with the others (round-robin over the
functions, dev then deployed, round after round) so that all meet the same machine:

- dev: the environment `scripts/dev` gives the functions in its HS256 mode (VAULT_JWT_HS256_SECRET set:
  HS256 secret, master key in plain text, the loopback switch on; scripts/lib.sh `load_dev_env`);
- deployed: the environment template.yaml gives them, against local servers: the JWKS fetched over
  HTTPS from a server on 127.0.0.1 whose certificate comes from a test CA this script makes, and the key
  ring sealed under KMS, opened with one `Decrypt` from moto's server (what `moto_server` runs, with
  TCP_NODELAY; scripts/lib.sh installs moto) over HTTPS with a certificate from the same CA
  (`AWS_ENDPOINT_URL_KMS`). The CA is trusted through
  `SSL_CERT_FILE` (which rustls-native-certs and so every TLS client of the vault honour), pointing at
  the system's own bundle with the test CA appended, so loading roots costs what it does with the
  system's roots.

A cold start is the time from just before this script spawns the process to its first
`GET /2018-06-01/runtime/invocation/next` on the Runtime API stub (the end of Lambda's init phase). Each
function runs with `VAULT_INIT_TIMINGS=1` and writes one `vault-init` line to stderr that splits its
init into phases (shared/src/timings.rs); the process start is the spawn to the moment `main` handed
over to the vault (wall clock on both sides: fork and exec, the loader, the tokio runtime), the runtime
is what is left after init (the Lambda runtime client's start and its first call).

    cargo build --release --locked $(. scripts/lib.sh; package_args $(function_crates http))
    python3 bench/cold_start.py --bin-dir target/release --runs 20 --repeat 3

Prints two Markdown tables (BENCHMARKS.md, "Cold start as deployed"): per function, p50 and p90 of the
cold start, the phases' medians, and the own share (the cold start minus the step holding the KMS and
JWKS calls).
"""

import argparse
import base64
import datetime
import http.server
import ipaddress
import os
import re
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASTER_KEY = "4f1c2b3a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708"
HS256_SECRET = "cold-start-bench-hs256-secret-of-more-than-32-chars"
STACK = "cold-start-bench"
# moto's server (what `moto_server -p PORT -c CERT -k KEY` runs), its sockets with TCP_NODELAY: werkzeug writes
# a response's head and body separately, and with Nagle's algorithm on, the body would wait for the
# client's delayed ACK (40 ms on Linux) on every call, a cost of this harness's server, not of KMS.
MOTO_SERVER = r"""
import os, socket, sys
from werkzeug.serving import make_server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

class Handler(MotoRequestHandler):
    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.environ["MOTO_PORT"] = str(port)
make_server("127.0.0.1", port, DomainDispatcherApplication(create_backend_app), threaded=True,
            request_handler=Handler, ssl_context=(cert, key)).serve_forever()
"""
SYSTEM_BUNDLES = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"]


def http_functions():
    """The HTTP functions, from `cargo metadata` (scripts/lib.sh `function_crates http`)."""
    out = subprocess.run(["bash", "-c", f". '{ROOT}/scripts/lib.sh'; function_crates http"], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    return out.stdout.split()


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


def make_ca(directory):
    """A test CA and a certificate for 127.0.0.1 it signed (P-256), as PEM files in `directory`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cold-start bench test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {name: os.path.join(directory, f"{name}.pem") for name in ("ca", "cert", "key")}
    with open(paths["ca"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["cert"], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths["key"], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return paths


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


def serve(handler_cls, port, tls=None):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler_cls)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def pct(xs, p):
    xs = sorted(xs)
    return xs[round((len(xs) - 1) * p)]


INIT_LINE = re.compile(r"^vault-init (.*)$", re.M)


def parse_init(stderr):
    found = INIT_LINE.search(stderr)
    if not found:
        return None
    return {k: float(v) for k, v in (pair.split("=", 1) for pair in found.group(1).split())}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", default=os.path.join(ROOT, "target/release"))
    parser.add_argument("--runs", type=int, default=20, help="cold starts per function and configuration")
    parser.add_argument("--repeat", type=int, default=1, help="runs; the tables give the median of their figures")
    parser.add_argument("--only", help="comma-separated functions (default: every HTTP function)")
    args = parser.parse_args()

    functions = args.only.split(",") if args.only else http_functions()
    for f in functions:
        if not os.access(os.path.join(args.bin_dir, f), os.X_OK):
            sys.exit(f"{args.bin_dir}/{f} is missing: cargo build --release --locked -p {f}")

    import boto3

    work = tempfile.mkdtemp(prefix="cold-start-")
    pki = make_ca(work)
    system = next((b for b in SYSTEM_BUNDLES if os.path.exists(b)), None)
    if system is None:
        sys.exit("no system CA bundle found (looked for " + ", ".join(SYSTEM_BUNDLES) + ")")
    bundle = os.path.join(work, "roots.pem")
    with open(bundle, "wb") as out:
        out.write(open(system, "rb").read().rstrip(b"\n") + b"\n" + open(pki["ca"], "rb").read())
    roots = open(bundle, "rb").read().count(b"BEGIN CERTIFICATE")

    kms_port = free_port()
    moto = subprocess.Popen([sys.executable, "-c", MOTO_SERVER, str(kms_port), pki["cert"], pki["key"]],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(kms_port)
        kms = boto3.client("kms", endpoint_url=f"https://127.0.0.1:{kms_port}", region_name="us-east-1",
                           aws_access_key_id="local", aws_secret_access_key="local", verify=pki["ca"])
        key = kms.create_key()["KeyMetadata"]
        sealed = kms.encrypt(KeyId=key["KeyId"], Plaintext=MASTER_KEY.encode(),
                             EncryptionContext={"purpose": "token-vault-keyring", "stack": STACK})
        ciphertext = base64.b64encode(sealed["CiphertextBlob"]).decode()

        jwks = open(os.path.join(ROOT, "tests/fixtures/jwks.json"), "rb").read()

        answer = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                  + f"content-length: {len(jwks)}\r\n\r\n".encode() + jwks)

        class Jwks(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self):
                # One write, as an identity provider's server answers (no head-then-body Nagle wait).
                self.wfile.write(answer)

            def log_message(self, *_):
                pass

        arrivals = Arrivals()

        class RuntimeApi(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                arrivals.arrived()
                # Hold the call until the process, killed once its init is measured, closes it.
                self.rfile.read(1)

            def log_message(self, *_):
                pass

        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(pki["cert"], pki["key"])
        jwks_port, api_port = free_port(), free_port()
        serve(Jwks, jwks_port, tls)
        serve(RuntimeApi, api_port)

        lambda_env = {
            "PATH": os.environ.get("PATH", ""),
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{api_port}",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "VAULT_INIT_TIMINGS": "1",
        }
        # scripts/dev in its HS256 mode (scripts/lib.sh `load_dev_env`), as `cargo lambda watch` hands it over.
        dev = {
            **lambda_env,
            "VAULT_MASTER_KEY": MASTER_KEY,
            "VAULT_JWT_HS256_SECRET": HS256_SECRET,
            "VAULT_JWT_ISSUER": "https://vault.local/",
            "VAULT_JWT_AUDIENCE": "token-vault",
            "VAULT_SECRETS_TABLE": "token-vault-secrets",
            "VAULT_AUDIT_TABLE": "token-vault-audit",
            "VAULT_KEYS_TABLE": "token-vault-keys",
            "VAULT_PROXY_ALLOW_LOOPBACK": "true",
            "AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:8000",
        }
        # template.yaml's settings, with the IdP and KMS on loopback.
        deployed = {
            **lambda_env,
            "AWS_LAMBDA_LOG_FORMAT": "JSON",
            "AWS_LAMBDA_LOG_LEVEL": "INFO",
            "VAULT_SECRETS_TABLE": "secrets",
            "VAULT_AUDIT_TABLE": "audit",
            "VAULT_KEYS_TABLE": "keys",
            "VAULT_JWT_ISSUER": "https://issuer.example/",
            "VAULT_JWT_AUDIENCE": "https://vault.example",
            "VAULT_JWKS_URL": f"https://127.0.0.1:{jwks_port}/.well-known/jwks.json",
            "VAULT_IDP_PROFILE": "rfc9068",
            "VAULT_MACHINE_CLAIM": "sub=client_id",
            "VAULT_KEYRING_CIPHERTEXT": ciphertext,
            "VAULT_KEYRING_STACK": STACK,
            "VAULT_KMS_KEY_ARN": key["Arn"],
            "AWS_ENDPOINT_URL_KMS": f"https://127.0.0.1:{kms_port}",
            "SSL_CERT_FILE": bundle,
        }
        configs = {"dev": dev, "deployed": deployed}

        def cold_start(config, function):
            env = {**configs[config], "AWS_LAMBDA_FUNCTION_NAME": function}
            spawned_wall = time.time_ns()
            started = time.perf_counter()
            proc = subprocess.Popen([os.path.join(args.bin_dir, function)], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
            at = arrivals.wait(20)
            proc.kill()
            out, err = proc.communicate()
            err = err.decode(errors="replace")
            if at is None:
                sys.exit(f"{config} {function}: no next call; it said: {(out.decode(errors='replace') + err)[-2000:]}")
            phases = parse_init(err)
            if phases is None:
                sys.exit(f"{config} {function}: no vault-init line (built before shared/src/timings.rs?): {err[-500:]}")
            cold = (at - started) * 1000
            phases["cold_ms"] = cold
            phases["process_ms"] = phases.pop("main_unix_us") / 1000 - spawned_wall / 1e6
            phases["runtime_ms"] = cold - phases["process_ms"] - phases["total_ms"]
            network = phases.get("network_ms", phases.get("kms_ms", 0) + phases.get("jwks_ms", 0))
            phases["own_ms"] = cold - network
            phases["own_init_ms"] = phases["total_ms"] - network
            return phases

        runs = []
        for _ in range(args.repeat):
            samples = {(c, f): [] for c in configs for f in functions}
            for f in functions:  # one warm-up round: the page cache, moto's first answers
                for c in configs:
                    cold_start(c, f)
            for _ in range(args.runs):
                for c in configs:
                    for f in functions:
                        samples[(c, f)].append(cold_start(c, f))
            runs.append(samples)
    finally:
        moto.kill()

    def stats(xs):
        """One run's figures for one function: p50 and p90 of the cold start, the phases' medians."""
        out = {"p50": statistics.median(s["cold_ms"] for s in xs), "p90": pct([s["cold_ms"] for s in xs], 0.9),
               "own_p50": statistics.median(s["own_ms"] for s in xs), "own_p90": pct([s["own_ms"] for s in xs], 0.9)}
        for k in {k for s in xs for k in s}:
            out[k] = statistics.median(s.get(k, 0.0) for s in xs)
        return out

    def across(per_run, key):
        """The median of the runs' figures."""
        return statistics.median(r.get(key, 0.0) for r in per_run)

    cols = [("process_ms", "process"), ("config_ms", "config"), ("roots_ms", "roots"), ("kms_ms", "KMS"),
            ("jwks_ms", "JWKS"), ("network_ms", "KMS ∥ JWKS"), ("clients_ms", "clients"), ("runtime_ms", "runtime")]
    print(f"{len(functions)} functions; {args.repeat} run(s) of {args.runs} cold starts per function and configuration, "
          f"interleaved; each figure is the median of the runs' figures. SSL_CERT_FILE holds {roots} roots "
          f"({os.path.basename(system)} and the test CA).\n")
    for c in configs:
        per = {f: [stats(r[(c, f)]) for r in runs] for f in functions}
        present = [(k, n) for k, n in cols if any(k in st for f in functions for st in per[f])]
        print(f"**{c}**\n")
        print("| Function | Cold starts | p50 (ms) | p90 (ms) | " + " | ".join(f"{n} p50" for _, n in present)
              + " | own share p50 | own share p90 | own share of init p50 |")
        print("|---" * (7 + len(present)) + "|")
        for f in functions:
            print(f"| `{f}` | {args.runs} × {args.repeat} | {across(per[f], 'p50'):.1f} | {across(per[f], 'p90'):.1f} | "
                  + " | ".join(f"{across(per[f], k):.2f}" for k, _ in present)
                  + f" | {across(per[f], 'own_p50'):.1f} | {across(per[f], 'own_p90'):.1f} "
                  + f"| {across(per[f], 'own_init_ms'):.2f} |")
        every = [stats([s for f in functions for s in r[(c, f)]]) for r in runs]
        print(f"\nAll functions: cold start p50 {across(every, 'p50'):.1f} ms, p90 {across(every, 'p90'):.1f} ms; "
              f"the vault's own share (cold start minus the KMS and JWKS calls) p50 {across(every, 'own_p50'):.1f} ms, "
              f"p90 {across(every, 'own_p90'):.1f} ms.\n")

if __name__ == "__main__":
    main()

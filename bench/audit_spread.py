#!/usr/bin/env python3
"""The audit write shards under load: reads through the local stack, then the events counted per partition key.

Against a running `scripts/dev` (its API and its DynamoDB-compatible server), this stores 20 secrets for
the development M2M client, sends `--batches` batch reads of all 20 and `--singles` single reads from
`--workers` threads, and then counts the organization's `vault.secret.retrieved` events per partition key
of the audit table (and per key of the `by-secret` index for one secret). It prints a Markdown table
(BENCHMARKS.md, "Audit write shards"): how evenly the events fell, and what that means per shard at
10,000 audited reads a second.

    scripts/dev &            # or with VAULT_LOCAL_DYNAMODB_ADDR / VAULT_LOCAL_API_PORT of your choice
    python3 bench/audit_spread.py --batches 500 --singles 5000

Uses only the standard library and boto3 (installed by scripts/lib.sh with moto).
"""

import argparse
import collections
import concurrent.futures
import json
import os
import statistics
import sys
import time
import urllib.request
import uuid

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tokens(path):
    out = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.strip().partition("=")
            if k:
                out[k] = v
    return out


def call(api, token, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{api}{path}", data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", default=f"http://127.0.0.1:{os.environ.get('VAULT_LOCAL_API_PORT', '9000')}")
    ap.add_argument("--dynamodb", default=f"http://{os.environ.get('VAULT_LOCAL_DYNAMODB_ADDR', '127.0.0.1:8000')}")
    ap.add_argument("--tokens", default=os.environ.get("VAULT_LOCAL_TOKENS_FILE", f"{ROOT}/.local/tokens.env"))
    ap.add_argument("--table", default=os.environ.get("VAULT_AUDIT_TABLE", "token-vault-audit"))
    ap.add_argument("--org", default="org_local")
    ap.add_argument("--batches", type=int, default=500)
    ap.add_argument("--singles", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args()

    token = tokens(args.tokens)["M2M_TOKEN"]
    # Names of this run only, so earlier events of the organization do not count.
    run = uuid.uuid4().hex[:8]
    names = [f"spread-{run}-{i}" for i in range(20)]
    for n in names:
        assert call(args.api, token, "POST", "/vault/secrets", {"name": n, "value": "v"}) == 201
    jobs = [("POST", "/vault/secrets/batch-get", {"names": names})] * args.batches
    jobs += [("GET", f"/vault/secrets/{names[i % 20]}", None) for i in range(args.singles)]
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        statuses = list(pool.map(lambda j: call(args.api, token, *j), jobs))
    took = time.monotonic() - started
    if any(s != 200 for s in statuses):
        sys.exit(f"refused reads: {collections.Counter(statuses)}")

    ddb = boto3.client(
        "dynamodb", endpoint_url=args.dynamodb, region_name="us-east-1",
        aws_access_key_id="local", aws_secret_access_key="local",
    )
    per_pk = collections.Counter()
    per_index_key = collections.Counter()
    wanted = set(names)
    kwargs = {"TableName": args.table}
    while True:
        page = ddb.scan(**kwargs)
        for item in page["Items"]:
            if item.get("orgId", {}).get("S") != args.org or item.get("secretName", {}).get("S") not in wanted:
                continue
            if item["event"]["S"] != "vault.secret.retrieved":
                continue
            per_pk[item["pk"]["S"]] += 1
            if item["secretName"]["S"] == names[0]:
                per_index_key[item.get("secretKey", {}).get("S", "(none)")] += 1
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    total = sum(per_pk.values())
    expected = args.batches * 20 + args.singles
    if total != expected:
        sys.exit(f"{total} events counted, {expected} expected")
    counts = sorted(per_pk.values())
    mean = total / len(counts)
    largest = counts[-1] / total
    one = sum(per_index_key.values())
    print(f"{len(jobs)} requests ({args.batches} batch reads of 20, {args.singles} single reads) in {took:.1f} s "
          f"from {args.workers} threads: {total} audit events.\n")
    print("| Keys | Partition keys | Events per key: min / median / max | Largest key's share | At 10,000 audited reads/s, the largest key takes |")
    print("|---|---|---|---|---|")
    print(f"| table `pk` | {len(counts)} | {counts[0]} / {statistics.median(counts):g} / {counts[-1]} "
          f"(mean {mean:.1f}) | {largest:.2%} | {10_000 * largest:.0f} writes/s |")
    ic = sorted(per_index_key.values())
    print(f"| `by-secret` keys of one secret ({one} events) | {len(ic)} | {ic[0]} / {statistics.median(ic):g} / {ic[-1]} "
          f"| {ic[-1] / one:.2%} | {10_000 * ic[-1] / one:.0f} writes/s (all 10,000 reads of that one secret) |")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The requests of bench/scale.sh against one running registry, timed one at
a time on one keep-alive connection (so that each figure is the cost of that
request, not of a queue). Prints one JSON object per case on stdout.

    scale-client.py URL --server NAME --repos N --tags N --blobs N [--ops N]

Reads: each request once untimed (the page cache), then repeated until it
has run --reps times or --budget seconds have passed (at least 3 times); the
figure is the median (p50) in ms. Writes: --ops times a 1 KiB blob push
(POST, PUT ?digest=) followed by a manifest PUT that references it, into
`scale/put-<server>`; then the same images pulled (manifest GET by tag, blob
GET).
"""
import argparse
import hashlib
import http.client
import json
import os
import statistics
import sys
import time
import urllib.parse

p = argparse.ArgumentParser()
p.add_argument("url")
p.add_argument("--server", required=True)
p.add_argument("--repos", type=int, required=True)
p.add_argument("--tags", type=int, required=True)
p.add_argument("--blobs", type=int, required=True)
p.add_argument("--ops", type=int, default=100)
p.add_argument("--reps", type=int, default=9)
p.add_argument("--budget", type=float, default=20.0)
p.add_argument("--only", default="", help="run only cases whose name contains this")
a = p.parse_args()

u = urllib.parse.urlsplit(a.url)
assert u.hostname in ("127.0.0.1", "::1", "localhost"), "only local registries"
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
sizes = {"repos": a.repos, "tags": a.tags, "blobs": a.blobs}


def request(method, path, body=None, headers=None, expect=(200,)):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    if r.status not in expect:
        sys.exit(f"{a.server}: {method} {path}: {r.status} {data[:300]!r}")
    return r, data


def emit(case, **fields):
    print(json.dumps({"server": a.server, "case": case, **sizes, **fields}), flush=True)


def timed_get(case, path, headers=None, count=None):
    """Median of repeated GETs; `count` says how many items the answer lists."""
    if a.only and a.only not in case:
        return
    _, body = request("GET", path, headers=headers)  # untimed: warm the page cache
    times = []
    start = time.monotonic()
    while len(times) < a.reps and (len(times) < 3 or time.monotonic() - start < a.budget):
        t0 = time.perf_counter()
        request("GET", path, headers=headers)
        times.append((time.perf_counter() - t0) * 1000)
    fields = {"path": path, "p50_ms": statistics.median(times), "min_ms": min(times), "reps": len(times), "bytes": len(body)}
    if count:
        fields["items"] = len(json.loads(body)[count])
    emit(case, **fields)


last_repo = f"c/n{(a.repos - 101) // 1000:03d}/r{a.repos - 101:06d}"
last_tag = f"t{a.tags - 101:06d}"
timed_get("catalog n=100 first page", "/v2/_catalog?n=100", count="repositories")
timed_get("catalog n=100 deep page", f"/v2/_catalog?n=100&last={urllib.parse.quote(last_repo, safe='')}", count="repositories")
timed_get("tags n=100 first page", "/v2/scale/big/tags/list?n=100", count="tags")
timed_get("tags n=100 deep page", f"/v2/scale/big/tags/list?n=100&last={last_tag}", count="tags")
timed_get("tags unpaged", "/v2/scale/big/tags/list", count="tags")
timed_get("manifest GET by tag", f"/v2/scale/big/manifests/t{a.tags // 2:06d}", headers={"Accept": OCI_MANIFEST})

if a.only and a.only not in "push pull":
    sys.exit(0)

# Pushes: a 1 KiB blob and a manifest that references it, --ops times.
repo = f"scale/put-{a.server}"
stage = f"{a.repos}-{a.tags}-{a.blobs}"


def push_blob(data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r, _ = request("POST", f"/v2/{repo}/blobs/uploads/", expect=(202,))
    loc = urllib.parse.urlsplit(r.getheader("Location"))
    path = loc.path + "?" + (loc.query + "&" if loc.query else "") + "digest=" + urllib.parse.quote(digest)
    request("PUT", path, body=data, headers={"Content-Type": "application/octet-stream"}, expect=(201,))
    return digest


cfg = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
cfg_digest = push_blob(cfg)
pushed = []
times = []
t_all = time.perf_counter()
for i in range(a.ops):
    data = os.urandom(1024)
    t0 = time.perf_counter()
    digest = push_blob(data)
    man = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": cfg_digest, "size": len(cfg)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": len(data)}],
        }
    ).encode()
    tag = f"s{stage}-{i}"
    request("PUT", f"/v2/{repo}/manifests/{tag}", body=man, headers={"Content-Type": OCI_MANIFEST}, expect=(201,))
    times.append((time.perf_counter() - t0) * 1000)
    pushed.append((tag, digest))
elapsed = time.perf_counter() - t_all
emit("push 1KiB blob + manifest", p50_ms=statistics.median(times), ops_per_s=a.ops / elapsed, ops=a.ops)

times = []
t_all = time.perf_counter()
for tag, digest in pushed:
    t0 = time.perf_counter()
    request("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    _, body = request("GET", f"/v2/{repo}/blobs/{digest}")
    if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
        sys.exit(f"{a.server}: blob {digest} came back with other bytes")
    times.append((time.perf_counter() - t0) * 1000)
elapsed = time.perf_counter() - t_all
emit("pull manifest + 1KiB blob", p50_ms=statistics.median(times), ops_per_s=a.ops / elapsed, ops=a.ops)

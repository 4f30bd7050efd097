#!/usr/bin/env python3
"""Grows a data directory, in CNCF distribution's filesystem layout, for
bench/scale.sh: written directly (pushing 100k repositories through the API
would take longer than the measurements).

    scale-fill.py DATA_DIR --repos N --tags N --blobs N

Incremental: the counts already present are kept in DATA_DIR/../fill-state.json
and only what is missing is added, so that one directory grows through the
sizes of a run. Deterministic.

What it writes (below DATA_DIR/docker/registry/v2):
- one small image (a config, a layer and its OCI manifest) in `scale/big`;
- `scale/big` with N tags t000000.. all pointing at that manifest
  (`_manifests/tags/<t>/current/link`; tags/list and a GET by tag read these);
- N repositories `c/n<k>/r<i>` (1,000 per namespace) that hold only the
  directories `_manifests` and `_layers`: what makes a directory a repository
  for the catalog of both registries, which neither descends into. Real
  repositories hold more below these, which neither catalog reads; leaving it
  out keeps 100k repositories at ~1.2 GB of disk;
- N unreferenced blobs of a few bytes (`blobs/sha256/<xx>/<hex>/data`), the
  data a server must not scan at start (~8 KiB of disk each on ext4).
"""
import argparse
import hashlib
import json
import os

p = argparse.ArgumentParser()
p.add_argument("data")
p.add_argument("--repos", type=int, default=0)
p.add_argument("--tags", type=int, default=0)
p.add_argument("--blobs", type=int, default=0)
a = p.parse_args()

v2 = os.path.join(a.data, "docker/registry/v2")
state_file = os.path.join(os.path.dirname(os.path.abspath(a.data)), "fill-state.json")
try:
    with open(state_file) as f:
        state = json.load(f)
except FileNotFoundError:
    state = {"repos": 0, "tags": 0, "blobs": 0}


def write(path: str, data: bytes):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def blob(data: bytes) -> str:
    hexd = hashlib.sha256(data).hexdigest()
    write(os.path.join(v2, "blobs/sha256", hexd[:2], hexd, "data"), data)
    return hexd


def link(path: str, hexd: str):
    write(os.path.join(path, "link"), ("sha256:" + hexd).encode())


# The image the tags of scale/big point at.
big = os.path.join(v2, "repositories/scale/big")
cfg = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
layer = b"scale layer\n" * 100
ch, lh = blob(cfg), blob(layer)
man = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + ch, "size": len(cfg)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + lh, "size": len(layer)}],
    },
    separators=(",", ":"),
).encode()
mh = blob(man)
for h in (ch, lh):
    link(os.path.join(big, "_layers/sha256", h), h)
link(os.path.join(big, "_manifests/revisions/sha256", mh), mh)

for t in range(state["tags"], a.tags):
    link(os.path.join(big, f"_manifests/tags/t{t:06d}/current"), mh)
state["tags"] = max(state["tags"], a.tags)

for r in range(state["repos"], a.repos):
    repo = os.path.join(v2, f"repositories/c/n{r // 1000:03d}/r{r:06d}")
    os.makedirs(os.path.join(repo, "_manifests"), exist_ok=True)
    os.makedirs(os.path.join(repo, "_layers"), exist_ok=True)
state["repos"] = max(state["repos"], a.repos)

blobs_root = os.path.join(v2, "blobs/sha256")
for i in range(256):
    os.makedirs(os.path.join(blobs_root, f"{i:02x}"), exist_ok=True)
for b in range(state["blobs"], a.blobs):
    data = f"scale blob {b}\n".encode()
    hexd = hashlib.sha256(data).hexdigest()
    d = os.path.join(blobs_root, hexd[:2], hexd)
    os.mkdir(d)  # the prefix directory exists; a second fill never repeats an index
    with open(os.path.join(d, "data"), "wb") as f:
        f.write(data)
state["blobs"] = max(state["blobs"], a.blobs)

with open(state_file, "w") as f:
    json.dump(state, f)
print(json.dumps({**state, "manifest": "sha256:" + mh}))

#!/usr/bin/env python3
"""Fills a data directory, in distribution's layout, for the garbage collection
scale run: REPOS repositories, each with MANIFESTS image manifests of LAYERS
layers (one config each), plus ORPHANS unreferenced blobs per repository.
Blobs are tiny: the run measures the walk, not the disk. Deterministic."""
import hashlib, json, os, sys

root, repos, manifests, layers, orphans = sys.argv[1], *map(int, sys.argv[2:6])
v2 = os.path.join(root, "docker/registry/v2")

def blob(data: bytes) -> str:
    hexd = hashlib.sha256(data).hexdigest()
    d = os.path.join(v2, "blobs/sha256", hexd[:2], hexd)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "data"), "wb") as f:
        f.write(data)
    return hexd

def link(path: str, hexd: str):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "link"), "w") as f:
        f.write("sha256:" + hexd)

total = 0
for r in range(repos):
    repo = os.path.join(v2, "repositories", f"scale/r{r:04d}")
    for m in range(manifests):
        desc = []
        for l in range(layers):
            h = blob(f"layer {r} {m} {l}".encode())
            link(os.path.join(repo, "_layers/sha256", h), h)
            desc.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + h, "size": len(f"layer {r} {m} {l}")})
        cfg = f'{{"r":{r},"m":{m}}}'.encode()
        ch = blob(cfg)
        link(os.path.join(repo, "_layers/sha256", ch), ch)
        man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + ch, "size": len(cfg)},
                          "layers": desc}, separators=(",", ":")).encode()
        mh = blob(man)
        link(os.path.join(repo, "_manifests/revisions/sha256", mh), mh)
        link(os.path.join(repo, f"_manifests/tags/t{m}/current"), mh)
        total += layers + 2
    for o in range(orphans):
        h = blob(f"orphan {r} {o}".encode())
        link(os.path.join(repo, "_layers/sha256", h), h)
        total += 1
print(total)

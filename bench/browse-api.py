#!/usr/bin/env python3
"""Times the browse API (what the web page asks for) at scale.

Fills a data directory in distribution's layout with one repository of TAGS
tags (each its own image: config with a platform, two layers) and REPOS small
repositories, starts berth on it (127.0.0.1, port 0, --no-self-image), and
times over one keep-alive connection:

  /berth/v1/browse/repository?name=big/app        (the issue's target: <= 20 ms for 1,000 tags)
  /berth/v1/browse/repositories?n=100             (the first page of a 10,000-repository catalog)
  /berth/v1/browse/repositories?q=r09&n=100       (a search across it)
  /berth/v1/browse/image?name=big/app&reference=t500

The first request of each is reported apart (cold: summaries not cached yet).

  bench/browse-api.py [TAGS] [REPOS] [ROUNDS]     (default 1000 10000 50)

Uses target/x86_64-unknown-linux-gnu/release/berth (build it first with
cargo build --release -p berth), or BERTH=path.
"""
import hashlib, http.client, json, os, re, shutil, statistics, subprocess, sys, tempfile, time

tags, repos, rounds = (int(a) for a in (sys.argv[1:] + ["1000", "10000", "50"][len(sys.argv) - 1:])[:3])
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
berth = os.environ.get("BERTH", os.path.join(root, "target/x86_64-unknown-linux-gnu/release/berth"))
if not os.access(berth, os.X_OK):
    sys.exit(f"no berth binary at {berth}: cargo build --release -p berth (or set BERTH)")

work = tempfile.mkdtemp(prefix="berth-browse-bench-")
v2 = os.path.join(work, "docker/registry/v2")


def blob(data: bytes) -> str:
    h = hashlib.sha256(data).hexdigest()
    d = os.path.join(v2, "blobs/sha256", h[:2], h)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "data"), "wb") as f:
        f.write(data)
    return h


def link(path: str, h: str):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "link"), "w") as f:
        f.write("sha256:" + h)


def image(repo: str, tag: str, seed: str):
    rdir = os.path.join(v2, "repositories", repo)
    layers = []
    for i in range(2):
        data = f"layer {seed} {i} ".encode() * 50
        h = blob(data)
        link(os.path.join(rdir, "_layers/sha256", h), h)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + h, "size": len(data)})
    arch = "arm64" if len(seed) % 2 else "amd64"
    cfg = json.dumps({"architecture": arch, "os": "linux", "created": "2026-01-01T00:00:00Z",
                      "config": {"Env": ["PATH=/bin", f"SEED={seed}"], "Cmd": ["/app"]},
                      "rootfs": {"type": "layers", "diff_ids": []},
                      "history": [{"created_by": "ADD a /"}, {"created_by": "ADD b /"}]}).encode()
    ch = blob(cfg)
    link(os.path.join(rdir, "_layers/sha256", ch), ch)
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + ch, "size": len(cfg)},
                      "layers": layers}).encode()
    mh = blob(man)
    link(os.path.join(rdir, "_manifests/revisions/sha256", mh), mh)
    link(os.path.join(rdir, f"_manifests/tags/{tag}/current"), mh)
    link(os.path.join(rdir, f"_manifests/tags/{tag}/index/sha256", mh), mh)


t0 = time.time()
for t in range(tags):
    image("big/app", f"t{t}", f"big {t}")
for r in range(repos):
    image(f"ns{r % 50:02d}/r{r:05d}", "latest", f"small {r}")
print(f"filled {work} with {tags} tags and {repos} repositories in {time.time() - t0:.1f} s", file=sys.stderr)

proc = subprocess.Popen([berth, "serve", "--data", work, "--listen", "127.0.0.1:0", "--no-self-image"],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
try:
    addr = None
    deadline = time.time() + 30
    while addr is None and time.time() < deadline:
        line = proc.stdout.readline()
        m = re.search(r"127\.0\.0\.1:(\d+)", line)
        if m and int(m.group(1)) != 0:
            addr = int(m.group(1))
    if addr is None:
        sys.exit("berth did not say where it listens")
    # Keep reading its log (one line per request), or berth would block on a full pipe.
    import threading
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    conn = http.client.HTTPConnection("127.0.0.1", addr)

    def get(path: str):
        start = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        took = (time.perf_counter() - start) * 1000
        if resp.status != 200:
            sys.exit(f"{path}: {resp.status} {body[:200]!r}")
        return took, json.loads(body), len(body)

    results = {}
    for name, path, check in [
        ("repository (1,000 tags)", "/berth/v1/browse/repository?name=big/app", lambda b: len(b["tags"]) == tags),
        ("catalog page (n=100)", "/berth/v1/browse/repositories?n=100", lambda b: b["total"] == repos + 1),
        ("catalog search", "/berth/v1/browse/repositories?q=r09&n=100", lambda b: b["total"] > 0),
        ("image", "/berth/v1/browse/image?name=big/app&reference=t500", lambda b: len(b["layers"]) == 2),
    ]:
        cold, body, size = get(path)
        assert check(body), name
        times = sorted(get(path)[0] for _ in range(rounds))
        results[name] = {"cold_ms": round(cold, 2), "median_ms": round(statistics.median(times), 2),
                         "p95_ms": round(times[int(len(times) * 0.95) - 1], 2), "bytes": size}
        print(f"{name:26} cold {cold:8.2f} ms   median {statistics.median(times):7.2f} ms   "
              f"p95 {times[int(len(times) * 0.95) - 1]:7.2f} ms   {size} bytes")
    print(json.dumps({"bench": "browse-api", "tags": tags, "repositories": repos, "rounds": rounds, "results": results}))
finally:
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(work, ignore_errors=True)

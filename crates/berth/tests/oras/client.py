"""oras-py, the ORAS project's Python client, driven by clients_oras.rs.

Each subcommand does one client action against a registry on 127.0.0.1 and
prints what it got as one JSON object; the Rust test asserts on it. oras-py
0.2 pushes with a subject and pulls artifacts, but has no call for the
referrers API: `referrers` sends that request through the client's own
request method (its session, retries and auth), as its other calls do.

    python client.py referrers HOST REPO DIGEST [ARTIFACT_TYPE]
    python client.py pull HOST REPO@DIGEST OUTDIR
    python client.py attach HOST REPO:TAG SUBJECT_JSON FILE ARTIFACT_TYPE [KEY=VALUE...]
"""

import json
import os
import sys
import urllib.parse

import oras.client
import oras.oci


def client(host):
    return oras.client.OrasClient(hostname=host, insecure=True)


def referrers(host, repo, digest, artifact_type=None):
    c = client(host)
    url = f"{c.prefix}://{host}/v2/{repo}/referrers/{digest}"
    if artifact_type:
        # Encoded: a bare "+" (as in "+json") would be read as a space.
        url += "?artifactType=" + urllib.parse.quote(artifact_type, safe="")
    r = c.do_request(url, "GET", headers={"Accept": "application/vnd.oci.image.index.v1+json"})
    return {
        "status": r.status_code,
        "content_type": r.headers.get("Content-Type"),
        "filters_applied": r.headers.get("OCI-Filters-Applied"),
        "index": r.json(),
    }


def pull(host, target, outdir):
    files = client(host).pull(target=f"{host}/{target}", outdir=outdir)
    return {"files": sorted(os.path.relpath(f, outdir) for f in files)}


def attach(host, target, subject_json, path, artifact_type, *annotations):
    """Pushes `path` as an artifact whose subject is the manifest described by
    `subject_json` ({"mediaType", "digest", "size"}). oras-py sets no
    artifactType field: the artifact type is its config's media type, which
    registries report in its place (image-spec)."""
    s = json.loads(subject_json)
    subject = oras.oci.Subject(mediaType=s["mediaType"], digest=s["digest"], size=s["size"])
    # oras-py wants files below the working directory.
    os.chdir(os.path.dirname(os.path.abspath(path)))
    config = os.path.abspath("empty-config.json")
    with open(config, "w") as f:
        f.write("{}")
    r = client(host).push(
        target=f"{host}/{target}",
        files=[f"{os.path.basename(path)}:{artifact_type}"],
        manifest_config=f"{config}:{artifact_type}",
        manifest_annotations=dict(a.split("=", 1) for a in annotations),
        subject=subject,
        quiet=True,
    )
    return {
        "status": r.status_code,
        "digest": r.headers.get("Docker-Content-Digest"),
        "oci_subject": r.headers.get("OCI-Subject"),
    }


def main(argv):
    commands = {"referrers": referrers, "pull": pull, "attach": attach}
    if len(argv) < 2 or argv[1] not in commands:
        sys.exit(__doc__)
    print(json.dumps(commands[argv[1]](*argv[2:])))


if __name__ == "__main__":
    main(sys.argv)

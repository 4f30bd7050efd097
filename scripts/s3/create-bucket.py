#!/usr/bin/env python3
"""Creates an S3 bucket with one SigV4-signed PUT (python3's standard library
only: the engines' start scripts run before anything else is installed).
Retries for up to 30 s while the engine finishes starting; a bucket that
exists already (409) is fine.

    create-bucket.py PORT ACCESS_KEY SECRET_KEY BUCKET
"""
import datetime
import hashlib
import hmac
import sys
import time
import urllib.error
import urllib.request

port, access_key, secret_key, bucket = sys.argv[1:5]
host = f"127.0.0.1:{port}"
REGION = "us-east-1"


def put_bucket():
    now = datetime.datetime.now(datetime.timezone.utc)
    amzdate, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(b"").hexdigest()
    signed = "host;x-amz-content-sha256;x-amz-date"
    canonical = (
        f"PUT\n/{bucket}\n\nhost:{host}\nx-amz-content-sha256:{payload}\n"
        f"x-amz-date:{amzdate}\n\n{signed}\n{payload}"
    )
    scope = f"{day}/{REGION}/s3/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amzdate}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = ("AWS4" + secret_key).encode()
    for part in (day, REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        f"http://{host}/{bucket}",
        method="PUT",
        headers={
            "x-amz-date": amzdate,
            "x-amz-content-sha256": payload,
            "Authorization": f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}",
        },
    )
    urllib.request.urlopen(request, timeout=30).read()


for _ in range(60):
    try:
        put_bucket()
        break
    except urllib.error.HTTPError as e:
        if e.code == 409:  # it exists already
            break
        last = e
        time.sleep(0.5)
    except OSError as e:
        last = e
        time.sleep(0.5)
else:
    sys.exit(f"could not create bucket {bucket} on {host}: {last}")

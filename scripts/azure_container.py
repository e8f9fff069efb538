#!/usr/bin/env python3
"""Creates a blob container on an Azure endpoint with a Shared Key signed REST call.
Usage: azure_container.py ENDPOINT_URL_WITH_ACCOUNT CONTAINER   (key from AZURE_KEY, account from URL)
Standard library only: there is no az tool here."""
import base64
import hashlib
import hmac
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from email.utils import formatdate


def main():
    endpoint, container = sys.argv[1].rstrip("/"), sys.argv[2]
    account = urllib.parse.urlsplit(endpoint).path.strip("/").split("/")[0]
    key = base64.b64decode(os.environ["AZURE_KEY"])
    date = formatdate(usegmt=True)
    version = "2021-08-06"
    canonical_headers = "x-ms-date:%s\nx-ms-version:%s\n" % (date, version)
    canonical_resource = "/%s/%s/%s\nrestype:container" % (account, account, container)
    # VERB, Content-Encoding, -Language, -Length, -MD5, -Type, Date, If-Modified-Since, If-Match,
    # If-None-Match, If-Unmodified-Since, Range, then canonical headers and resource.
    content_type = "application/octet-stream"
    to_sign = "PUT\n\n\n\n\n%s\n\n\n\n\n\n\n" % content_type + canonical_headers + canonical_resource
    signature = base64.b64encode(hmac.new(key, to_sign.encode(), hashlib.sha256).digest()).decode()
    req = urllib.request.Request("%s/%s?restype=container" % (endpoint, container), method="PUT", data=b"")
    req.add_header("Content-Type", content_type)
    req.add_header("x-ms-date", date)
    req.add_header("x-ms-version", version)
    req.add_header("Authorization", "SharedKey %s:%s" % (account, signature))
    try:
        urllib.request.urlopen(req, timeout=10)
    except urllib.error.HTTPError as e:
        if e.code != 409:  # already exists is fine
            print("container create failed: %s %s" % (e.code, e.read()[:300]), file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()

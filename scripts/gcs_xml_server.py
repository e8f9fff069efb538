#!/usr/bin/env python3
"""A small in-memory server for the part of the Google Cloud Storage XML API that object_store's
GCS client uses. It is a test double, not an emulator: no auth, memory only. It exists because no
installable GCS emulator accepts object_store's XML-API writes (see docs/storage.md). It proves
that pgstrata and object_store agree with our reading of the GCS XML API, nothing more.

Usage: gcs_xml_server.py --port N [--bucket NAME ...]
"""
import argparse
import hashlib
import http.server
import itertools
import threading
import time
import urllib.parse
from email.utils import formatdate
from xml.sax.saxutils import escape

LOCK = threading.Lock()
BUCKETS = {}          # bucket -> {key: (bytes, generation, mtime)}
UPLOADS = {}          # upload id -> (bucket, key, {part number: (etag, bytes)})
GENERATION = itertools.count(int(time.time() * 1000))
UPLOAD_IDS = itertools.count(1)


def etag_of(data):
    return '"%s"' % hashlib.md5(data).hexdigest()


def rfc3339(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    # --- helpers -------------------------------------------------------------------------
    def split(self):
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        parts = parsed.path.lstrip("/").split("/", 1)
        bucket = urllib.parse.unquote(parts[0])
        key = urllib.parse.unquote(parts[1]) if len(parts) > 1 else ""
        return bucket, key, query

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def reply(self, status, body=b"", headers=None, content_type="application/xml"):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if body or self.command != "HEAD":
            self.send_header("Content-Type", content_type)
        if self.command == "HEAD" and "Content-Length" in (headers or {}):
            pass
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def error(self, status, code, message):
        xml = "<?xml version='1.0' encoding='UTF-8'?><Error><Code>%s</Code><Message>%s</Message></Error>" % (
            code, escape(message))
        self.reply(status, xml.encode())

    def meta_headers(self, data, gen, mtime):
        return {
            "ETag": etag_of(data),
            "x-goog-generation": str(gen),
            "Last-Modified": formatdate(mtime, usegmt=True),
        }

    def bucket_or_404(self, bucket):
        objs = BUCKETS.get(bucket)
        if objs is None:
            self.error(404, "NoSuchBucket", "bucket %s does not exist" % bucket)
        return objs

    def generation_precondition(self, objs, key):
        want = self.headers.get("x-goog-if-generation-match")
        if want is None:
            return True
        current = objs.get(key)
        if want == "0":
            ok = current is None
        else:
            ok = current is not None and str(current[1]) == want
        if not ok:
            self.error(412, "PreconditionFailed", "generation precondition failed for %s" % key)
        return ok

    def store(self, objs, key, data):
        gen = next(GENERATION)
        objs[key] = (data, gen, time.time())
        return gen

    # --- verbs -------------------------------------------------------------------------
    def do_PUT(self):
        bucket, key, query = self.split()
        data = self.body()
        with LOCK:
            objs = self.bucket_or_404(bucket)
            if objs is None:
                return
            if "uploadId" in query:
                upload = UPLOADS.get(query["uploadId"])
                if upload is None:
                    return self.error(404, "NoSuchUpload", "no such upload")
                tag = etag_of(data)
                upload[2][int(query["partNumber"])] = (tag, data)
                return self.reply(200, b"", {"ETag": tag})
            source = self.headers.get("x-goog-copy-source")
            if source is not None:
                src_bucket, _, src_key = urllib.parse.unquote(source).lstrip("/").partition("/")
                src = BUCKETS.get(src_bucket, {}).get(src_key)
                if src is None:
                    return self.error(404, "NoSuchKey", "copy source %s does not exist" % source)
                if not self.generation_precondition(objs, key):
                    return
                gen = self.store(objs, key, src[0])
                xml = "<CopyObjectResult><ETag>%s</ETag></CopyObjectResult>" % escape(etag_of(src[0]))
                return self.reply(200, xml.encode(), {"x-goog-generation": str(gen)})
            if not self.generation_precondition(objs, key):
                return
            gen = self.store(objs, key, data)
            self.reply(200, b"", {"ETag": etag_of(data), "x-goog-generation": str(gen)})

    def do_POST(self):
        bucket, key, query = self.split()
        data = self.body()
        with LOCK:
            objs = self.bucket_or_404(bucket)
            if objs is None:
                return
            if "uploads" in query:
                upload_id = "upload-%d" % next(UPLOAD_IDS)
                UPLOADS[upload_id] = (bucket, key, {})
                xml = ("<InitiateMultipartUploadResult><Bucket>%s</Bucket><Key>%s</Key><UploadId>%s</UploadId>"
                       "</InitiateMultipartUploadResult>") % (escape(bucket), escape(key), upload_id)
                return self.reply(200, xml.encode())
            if "uploadId" in query:
                upload = UPLOADS.pop(query["uploadId"], None)
                if upload is None:
                    return self.error(404, "NoSuchUpload", "no such upload")
                import xml.etree.ElementTree as ET
                root = ET.fromstring(data)
                parts = []
                for part in root.iter("Part"):
                    number = int(part.findtext("PartNumber"))
                    tag = part.findtext("ETag")
                    stored = upload[2].get(number)
                    if stored is None or stored[0].strip('"') != (tag or "").strip('"'):
                        return self.error(400, "InvalidPart", "part %d missing or etag mismatch" % number)
                    parts.append((number, stored[1]))
                parts.sort()
                whole = b"".join(p[1] for p in parts)
                gen = self.store(objs, key, whole)
                xml = ("<CompleteMultipartUploadResult><Bucket>%s</Bucket><Key>%s</Key><ETag>%s</ETag>"
                       "</CompleteMultipartUploadResult>") % (escape(bucket), escape(key), escape(etag_of(whole)))
                return self.reply(200, xml.encode(), {"x-goog-generation": str(gen)})
        self.error(400, "InvalidRequest", "unsupported POST")

    def do_DELETE(self):
        bucket, key, query = self.split()
        with LOCK:
            objs = self.bucket_or_404(bucket)
            if objs is None:
                return
            if "uploadId" in query:
                UPLOADS.pop(query["uploadId"], None)
                return self.reply(204)
            if key not in objs:
                return self.error(404, "NoSuchKey", "no such key %s" % key)
            del objs[key]
        self.reply(204)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        bucket, key, query = self.split()
        with LOCK:
            objs = self.bucket_or_404(bucket)
            if objs is None:
                return
            if not key:
                return self.list(objs, query)
            obj = objs.get(key)
        if obj is None:
            return self.error(404, "NoSuchKey", "no such key %s" % key)
        data, gen, mtime = obj
        headers = self.meta_headers(data, gen, mtime)
        if_match = self.headers.get("If-Match")
        if if_match and if_match != headers["ETag"]:
            return self.error(412, "PreconditionFailed", "etag mismatch")
        if_none = self.headers.get("If-None-Match")
        if if_none and if_none == headers["ETag"]:
            return self.reply(304, b"", headers)
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            spec = rng[len("bytes="):]
            start, _, end = spec.partition("-")
            size = len(data)
            if start == "":
                first = max(0, size - int(end))
                last = size - 1
            else:
                first = int(start)
                last = int(end) if end else size - 1
                last = min(last, size - 1)
            if first >= size:
                return self.error(416, "InvalidRange", "range not satisfiable")
            headers["Content-Range"] = "bytes %d-%d/%d" % (first, last, size)
            return self.reply(206, data[first:last + 1], headers, "application/octet-stream")
        if self.command == "HEAD":
            headers["Content-Length"] = str(len(data))
            self.send_response(200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            return
        self.reply(200, data, headers, "application/octet-stream")

    def list(self, objs, query):
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter")
        start_after = query.get("continuation-token") or query.get("start-after") or ""
        max_keys = int(query.get("max-keys", "1000"))
        keys = sorted(k for k in objs if k.startswith(prefix) and k > start_after)
        contents, prefixes, seen = [], [], set()
        last = None
        truncated = False
        for k in keys:
            if len(contents) + len(prefixes) >= max_keys:
                truncated = True
                break
            last = k
            if delimiter:
                rest = k[len(prefix):]
                if delimiter in rest:
                    p = prefix + rest.split(delimiter, 1)[0] + delimiter
                    if p not in seen:
                        seen.add(p)
                        prefixes.append(p)
                    continue
            contents.append(k)
        out = ["<?xml version='1.0' encoding='UTF-8'?><ListBucketResult>"]
        for k in contents:
            data, gen, mtime = objs[k]
            out.append("<Contents><Key>%s</Key><Size>%d</Size><LastModified>%s</LastModified><ETag>%s</ETag></Contents>"
                       % (escape(k), len(data), rfc3339(mtime), escape(etag_of(data))))
        for p in prefixes:
            out.append("<CommonPrefixes><Prefix>%s</Prefix></CommonPrefixes>" % escape(p))
        if truncated and last is not None:
            out.append("<NextContinuationToken>%s</NextContinuationToken>" % escape(last))
        out.append("</ListBucketResult>")
        self.reply(200, "".join(out).encode())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=4443)
    ap.add_argument("--bucket", action="append", default=[])
    args = ap.parse_args()
    for b in args.bucket or ["test-bucket"]:
        BUCKETS[b] = {}
    server = http.server.ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()

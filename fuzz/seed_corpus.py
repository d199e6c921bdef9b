#!/usr/bin/env python3
"""Seeds fuzz/corpus/ from the captured fixtures in icap/tests/fixtures, and
the `content` target from the scan fixtures in tests/fixtures.

Each captured connection is cut into its messages. `head` and `round_trip`
get one file per message (for `head`, behind a 0 byte that selects the
default limits); `chunked` gets each message's bytes after its head, behind
three bytes (default limits, two split points).
"""
import bz2
import gzip
import hashlib
import io
import os
import re
import tarfile
import zipfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "icap", "tests", "fixtures")
START = re.compile(rb"(?m)^(?=(?:OPTIONS|REQMOD|RESPMOD) icap|ICAP/1\.0 \d{3})")


def write(target, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


for name in sorted(os.listdir(FIXTURES)):
    if not name.endswith((".client", ".server")):
        continue
    raw = open(os.path.join(FIXTURES, name), "rb").read()
    cuts = [m.start() for m in START.finditer(raw)] + [len(raw)]
    for a, b in zip(cuts, cuts[1:]):
        msg = raw[a:b][:65536]
        write("head", b"\x00" + msg)
        if name.endswith(".client"):
            write("round_trip", msg)
        head_end = msg.find(b"\r\n\r\n")
        # The body starts after the ICAP head and the encapsulated heads.
        m = re.search(rb"(?:req|res|opt)-body=(\d+)", msg[:head_end])
        if m:
            body = msg[head_end + 4 + int(m.group(1)):]
            if body:
                write("chunked", b"\x00\x10\x40" + body[:65536])

# `content`: the body parsers of a scan (content/src/fuzzing.rs).
# The first byte picks the parser (0 the zip watch, 1 the ar splitter, 2 the
# form parser, 3 decoding), eight more seed the piece sizes; the form parser
# and decoding take a first line (a boundary, a Content-Encoding).
SCAN_FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")
SEED = b"\x2a" * 8
for name in sorted(os.listdir(SCAN_FIXTURES)):
    body = open(os.path.join(SCAN_FIXTURES, name), "rb").read()
    write("content", b"\x00" + SEED + body)
    if name.endswith((".deb", ".rpm")):
        write("content", b"\x01" + SEED + body)
FORM = (b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.zip\"\r\n"
        b"Content-Type: application/zip\r\n\r\nPK\x03\x04data\r\n--b\r\n"
        b"Content-Disposition: form-data; name=\"t\"\r\n\r\ntext\r\n--b--\r\n")
write("content", b"\x02" + SEED + b"b\n" + FORM)
for coding, data in [(b"gzip", gzip.compress(FORM, mtime=0)), (b"deflate", zlib.compress(FORM)),
                     (b"gzip, deflate", zlib.compress(gzip.compress(FORM, mtime=0)))]:
    write("content", b"\x03" + SEED + coding + b"\n" + data)

# A tar in bzip2 streams, as pbzip2 writes them, its cut falling inside a
# member: one of text, one with a .deb that a stream ends in.
def tar_of(files):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            t.addfile(info, io.BytesIO(data))
    return out.getvalue()


deb = open(os.path.join(SCAN_FIXTURES, "eicar.deb"), "rb").read()
for tar in [tar_of([("a.txt", b"a" * 3000), ("b.txt", b"in the second stream")]),
            tar_of([("a.txt", b"text"), ("b.deb", deb)])]:
    cut = len(tar) // 2
    write("content", b"\x00" + SEED + bz2.compress(tar[:cut]) + bz2.compress(tar[cut:]))

# A zip whose entries are packed by bzip2 (`zip -Z bzip2`), one holding a
# ZIP64 zip, one a .deb.
out = io.BytesIO()
with zipfile.ZipFile(out, "w") as z:
    for name, data in [("readme.txt", b"nothing to see here"),
                       ("inner.zip", open(os.path.join(SCAN_FIXTURES, "eicar-zip64.zip"), "rb").read()),
                       ("e.deb", deb)]:
        z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data, zipfile.ZIP_BZIP2)
write("content", b"\x00" + SEED + out.getvalue())

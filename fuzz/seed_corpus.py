#!/usr/bin/env python3
"""Seeds fuzz/corpus/ from the captured fixtures in icap/tests/fixtures.

Each captured connection is cut into its messages. `head` and `round_trip`
get one file per message (for `head`, behind a 0 byte that selects the
default limits); `chunked` gets each message's bytes after its head, behind
three bytes (default limits, two split points).
"""
import hashlib
import os
import re

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

#!/usr/bin/env python3
"""What a producer holds for each scan it has queued, apart from what each
ICAP connection costs anyway.

Opens COUNT connections to the producer and reads its RSS; then sends one
RESPMOD (a unique 4 KiB body, all of it in the preview, Allow: 204) on each,
waits until the queue holds them all (no handler runs, so nothing is taken),
and reads the RSS again. Prints both, and the difference per scan.

    queued_memory.py PORT PRODUCER_PID COUNT QUEUE_STATUS_COMMAND...
"""

import os
import resource
import socket
import subprocess
import sys
import time

SIZE = 4096
# Between two requests: scans queue up over time, as when the handlers are
# away, rather than all in the same millisecond.
PACE = float(os.environ.get("PACE", "0.002"))


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def respmod(port, n):
    body = os.urandom(SIZE // 2).hex().encode()
    body = (b"%016d" % n) + body[16:]
    http = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % SIZE
    icap = (
        b"RESPMOD icap://127.0.0.1:%d/avscan ICAP/1.0\r\n"
        b"Host: 127.0.0.1\r\n"
        b"Allow: 204\r\n"
        b"Preview: %d\r\n"
        b"Encapsulated: res-hdr=0, res-body=%d\r\n\r\n" % (port, SIZE, len(http))
    )
    return icap + http + b"%x\r\n" % SIZE + body + b"\r\n0; ieof\r\n\r\n"


def queued(command):
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if fields and fields[0] == "normal":
            return int(fields[2])
    return 0


def main():
    port, pid, count = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    command = sys.argv[4:]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 64), hard))
    already = queued(command)
    before = rss_kb(pid)
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    time.sleep(1)
    idle = rss_kb(pid)
    for i, c in enumerate(conns):
        c.sendall(respmod(port, i))
        time.sleep(PACE)
    depth = 0
    for _ in range(150):
        depth = queued(command)
        if depth >= already + count:
            break
        time.sleep(0.2)
    time.sleep(1)
    waiting = rss_kb(pid)
    for c in conns:
        c.close()
    print(f"producer RSS: {before} kB before; {idle} kB with {count} idle connections "
          f"({(idle - before) / count:.1f} kB each); {waiting} kB with a scan queued on each "
          f"({depth} in the queue): {(waiting - idle) / count:.1f} kB per queued scan "
          f"beyond its connection; {(waiting - before) / count:.1f} kB per queued scan in all")


if __name__ == "__main__":
    main()

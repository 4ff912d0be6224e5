#!/usr/bin/python3
"""Regenerates proto/vectors.json from a running zmixd on the stories260K model:

    zmixd --model ../shared/models/stories260K --experts e0.st,e1.st,e2.st \
          --listen unix:/tmp/z.sock --cache-dir /tmp/zc &
    /usr/bin/python3 proto/make_vectors.py unix:/tmp/z.sock > proto/vectors.json

Each vector is one request (exact bytes) and the exact bytes the daemon answers, for methods
whose answer does not depend on time or state. tests/e2e replays them; review the diff
whenever a vector changes: it is a protocol change.
"""

import json
import socket
import sys

import msgpack

EX = [{"prompt": [1, 2, 3], "target": [4]}]

# (name, request object or raw bytes)
REQUESTS = [
    ("ping", [0, 1, "ping", {}]),
    ("ping with params as a one-map array", [0, 2, "ping", [{}]]),
    ("ping with nil params", [0, 3, "ping", None]),
    ("unknown method", [0, 4, "frobnicate", {}]),
    ("params not a map", [0, 5, "ping", "x"]),
    ("unknown field", [0, 6, "ping", {"verbose": True}]),
    ("status: missing job", [0, 7, "status", {}]),
    ("status: job of the wrong type", [0, 8, "status", {"job": -1}]),
    ("status: no such job", [0, 9, "status", {"job": 4000000000}]),
    ("submit: missing task", [0, 10, "submit", {"examples": EX}]),
    ("submit: bad task name", [0, 11, "submit", {"task": "a/b", "examples": EX}]),
    ("submit: token outside the vocabulary",
     [0, 12, "submit", {"task": "t", "examples": [{"prompt": [1, 600], "target": [4]}]}]),
    ("submit: empty target",
     [0, 13, "submit", {"task": "t", "examples": [{"prompt": [1], "target": []}]}]),
    ("submit: misspelt CEM setting",
     [0, 14, "submit", {"task": "t", "examples": EX, "cem": {"popsize": 8}}]),
    ("submit: population too small",
     [0, 15, "submit", {"task": "t", "examples": EX, "cem": {"pop": 1}}]),
    ("submit: bad metric",
     [0, 16, "submit", {"task": "t", "examples": EX, "cem": {"metric": "f1"}}]),
    ("submit: multiple choice mixed with a target",
     [0, 21, "submit", {"task": "t", "examples": [
         {"prompt": [1], "choices": [[2], [3, 4]], "answer": 1},
         {"prompt": [1], "target": [2]}]}]),
    ("submit: multiple-choice answer out of range",
     [0, 22, "submit", {"task": "t", "examples": [
         {"prompt": [1], "choices": [[2], [3]], "answer": 2}]}]),
    ("get: bad task name", [0, 17, "get", {"task": ".x"}]),
    ("wait: timeout out of range", [0, 18, "wait", {"job": 1, "timeout": 1e9}]),
    ("a request of 3 elements", [0, 19, "ping"]),
    ("msgid not an integer", [0, "a", "ping", {}]),
    ("a notification from the client", [2, "ping", {}]),
    ("a response from the client", [1, 20, None, None]),
    ("not an array", {"method": "ping"}),
    ("byte 0xc1 (never valid msgpack)", b"\x93\x00\xc1\x00"),
    ("array header announcing 4 GiB", b"\xdd\xff\xff\xff\xff"),
]


def exchange(address, raw):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(address[5:])
    s.sendall(raw)
    unpacker = msgpack.Unpacker(raw=False)
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
        unpacker.feed(chunk)
        if any(True for _ in unpacker):
            break
    s.close()
    return out


def main():
    address = sys.argv[1]
    vectors = []
    for name, req in REQUESTS:
        raw = req if isinstance(req, bytes) else msgpack.packb(req)
        resp = exchange(address, raw)
        vectors.append({"name": name, "request_hex": raw.hex(), "response_hex": resp.hex(),
                        "response": msgpack.unpackb(resp, raw=False)})
    json.dump({"model": "stories260K (vocab 512, context 512), 3 experts", "vectors": vectors},
              sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

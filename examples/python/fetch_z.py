#!/usr/bin/env python3
"""Fetch a task's adapted vectors z' from zmixd and write them as a safetensors file.

    python3 fetch_z.py TASK OUT.safetensors [--addr unix:/path.sock] [--token-file F]

The daemon: --addr, else $ZMIX_ADDR, else its default socket; the token: --token-file, else
$ZMIX_TOKEN_FILE.

One 1-D F32 tensor per adapted matrix, under the same names as in the expert files, so a
serving system loads z' exactly like an expert: W' = U diag(sigma * z') V^T. The task, its
cache key and alpha go into the file's __metadata__. Standard library + the zmix_client
package only.
"""

import argparse
import json
import os
import struct
import sys

try:  # the installed package (pip install ./clients/python, docs/install.md)
    import zmix_client  # noqa: F401
except ImportError:  # else the one in this checkout
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                    "clients", "python"))
from zmix_client import Client, RpcError, read_token_file  # noqa: E402


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, floats) in file order, written as little-endian F32."""
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name, values in tensors:
        blob = struct.pack("<%df" % len(values), *[float(v) for v in values])
        header[name] = {"dtype": "F32", "shape": [len(values)],
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)  # keep the data 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)  # readers never see half a file


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("task")
    ap.add_argument("out")
    ap.add_argument("--addr", help="unix:PATH or tcp:HOST:PORT (default: $ZMIX_ADDR or the "
                                   "daemon's default socket)")
    ap.add_argument("--token-file", help="the token for a TCP listener (default: "
                                         "$ZMIX_TOKEN_FILE)")
    args = ap.parse_args()
    try:  # without --token-file: $ZMIX_TOKEN_FILE, read by Client
        token = read_token_file(args.token_file) if args.token_file else None
    except (OSError, ValueError) as e:
        print("fetch_z: --token-file: %s" % e, file=sys.stderr)
        return 2
    try:
        with Client(args.addr, token=token) as c:
            r = c.get(args.task, vectors=True)
    except RpcError as e:
        print("fetch_z: %s" % e, file=sys.stderr)
        return 1
    except ValueError as e:  # a bad ZMIX_TOKEN_FILE
        print("fetch_z: %s" % e, file=sys.stderr)
        return 2
    except OSError as e:
        print("fetch_z: cannot reach the daemon: %s" % e, file=sys.stderr)
        return 1
    tensors = [(m["name"], r["z"][m["name"]]) for m in r["matrices"]]
    metadata = {"task": r["task"], "key": r["key"], "job": str(r["job"]),
                "alpha": ",".join("%.9g" % a for a in r["alpha"]),
                "accuracy": "%.9g" % r["score"]["accuracy"],
                "loglik": "%.9g" % r["score"]["loglik"]}
    write_safetensors(args.out, tensors, metadata)
    print("wrote %s: %d tensors, %d floats" % (args.out, len(tensors),
                                                 sum(len(v) for _, v in tensors)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

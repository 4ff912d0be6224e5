#!/usr/bin/env python3
"""Submit an adaptation job to zmixd and wait for it, with a progress line.

    python3 submit_and_wait.py TASK EXAMPLES.json [--addr unix:/path.sock] [--iters 20]
                                [--pop 32] [--per-layer] [--token-file F]

EXAMPLES.json is {"examples": [{"prompt": [ids], "target": [ids]}, ...]} (as for `zmix submit`;
- reads standard input). The daemon: --addr, else $ZMIX_ADDR, else its default socket; the
token: --token-file, else $ZMIX_TOKEN_FILE.
Prints the final status as JSON on stdout; exit code 0 when the job is done, 1 otherwise.
Uses only the standard library and the zmix_client package (python3-msgpack).
"""

import argparse
import json
import os
import sys

try:  # the installed package (pip install ./clients/python, docs/install.md)
    import zmix_client  # noqa: F401
except ImportError:  # else the one in this checkout
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                    "clients", "python"))
from zmix_client import Client, RpcError, load_examples, read_token_file  # noqa: E402


def progress_line(st):
    best = st.get("best")
    best_text = ("best acc %.4f loglik %.5f" % (best["accuracy"], best["loglik"])
                 if best else "best -")
    rate = st["evaluations"] / st["elapsed"] if st.get("elapsed") else 0.0
    return "job %d: generation %d/%d: %s, %.0f eval/s" % (
        st["job"], st["generation"], st["max_generations"], best_text, rate)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("task")
    ap.add_argument("examples", help="EXAMPLES.json, or - for standard input")
    ap.add_argument("--addr", help="unix:PATH or tcp:HOST:PORT (default: $ZMIX_ADDR or the "
                                   "daemon's default socket)")
    ap.add_argument("--token-file", help="the token for a TCP listener (default: "
                                         "$ZMIX_TOKEN_FILE)")
    ap.add_argument("--iters", type=int)
    ap.add_argument("--pop", type=int)
    ap.add_argument("--per-layer", action="store_true")
    ap.add_argument("--recompute", action="store_true")
    args = ap.parse_args()

    try:
        examples = load_examples(args.examples)  # "-": standard input
    except (OSError, ValueError) as e:
        print("submit_and_wait: %s" % e, file=sys.stderr)
        return 2
    cem = {}
    if args.iters:
        cem["iters"] = args.iters
    if args.pop:
        cem["pop"] = args.pop
    if args.per_layer:
        cem["per_layer"] = True
    try:  # without --token-file: $ZMIX_TOKEN_FILE, read by Client
        token = read_token_file(args.token_file) if args.token_file else None
    except (OSError, ValueError) as e:
        print("submit_and_wait: --token-file: %s" % e, file=sys.stderr)
        return 2

    tty = sys.stderr.isatty()
    try:
        with Client(args.addr, token=token) as c:
            sub = c.submit(args.task, examples, cem=cem, recompute=args.recompute)
            if sub.get("cached"):
                print(json.dumps(sub))
                print("task %s: answered from the cache" % args.task, file=sys.stderr)
                return 0
            job = sub["job"]
            print("job %d %s" % (job, sub["state"]), file=sys.stderr)
            last = -1
            while True:
                reply = c.wait(job, timeout=1.0)  # long-poll: returns at the end or after 1 s
                st = reply["status"]
                if st["generation"] != last or not reply["timed_out"]:
                    line = progress_line(st)
                    print(("\r" + line + "\033[K") if tty else line, end="" if tty else "\n",
                          file=sys.stderr, flush=True)
                    last = st["generation"]
                if not reply["timed_out"]:
                    break
            if tty:
                print(file=sys.stderr)
            print(json.dumps(st))
            return 0 if st["state"] == "done" else 1
    except RpcError as e:
        print("submit_and_wait: %s" % e, file=sys.stderr)
        return 1
    except ValueError as e:  # a bad ZMIX_TOKEN_FILE
        print("submit_and_wait: %s" % e, file=sys.stderr)
        return 2
    except OSError as e:
        print("submit_and_wait: cannot reach the daemon: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

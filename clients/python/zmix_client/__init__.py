"""A Python client for zmixd (MessagePack-RPC over a Unix or TCP socket).

Only python3-msgpack and the standard library. One method per protocol method (see
proto/PROTOCOL.md); every call has a timeout; results are plain dicts and lists.

    from zmix_client import Client
    with Client() as c:               # $ZMIX_ADDR, else the daemon's default socket
        job = c.submit("sentiment", examples=[{"prompt": [1, 2], "target": [3]}],
                       cem={"pop": 16, "iters": 10})
        done = c.wait(job["job"], timeout=60)
        result = c.get("sentiment")
        z = result["z"]   # {matrix name: list of float}, whatever else is installed

The daemon is found as every zmix client finds it (the zmix CLI and the C library alike):
the address given, else $ZMIX_ADDR, else unix:$XDG_CACHE_HOME/zmix/zmixd.sock (else
~/.cache/zmix/zmixd.sock). The token, when no token= is given, is read from the file
$ZMIX_TOKEN_FILE names.

The vectors z' are always lists of Python floats (float32 values widened). With
get(..., as_numpy=True) they are NumPy float32 arrays instead (NumPy must be installed).
"""

import collections
import os
import socket
import struct

import msgpack

__version__ = "0.1.0"
__all__ = ["Client", "RpcError", "default_address", "load_examples", "read_token_file",
           "__version__"]


class RpcError(Exception):
    """An error answered by the daemon: code ("EINVAL", "ENOTFOUND", ...) and message."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def default_address():
    """ZMIX_ADDR, else the daemon's default socket in its cache directory."""
    addr = os.environ.get("ZMIX_ADDR")
    if addr:
        return addr
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return "unix:" + os.path.join(base, "zmix", "zmixd.sock")


def read_token_file(path):
    """The token in a token file, as zmixd --token-file reads it: the whole file less
    trailing newlines, carriage returns and spaces. ValueError when it is empty."""
    with open(path, "rb") as f:
        raw = f.read(4097)
    if len(raw) > 4096:
        raise ValueError(f"token file {path}: more than 4096 bytes")
    token = raw.rstrip(b"\r\n ").decode("utf-8", "replace")
    if not token:
        raise ValueError(f"token file {path}: empty")
    if "\0" in token:
        raise ValueError(f"token file {path}: holds a NUL byte")
    return token


EXAMPLES_SHAPE = '{"examples": [{"prompt": [ids] or "text", "target": [ids] or "text"}, ...]}'


def load_examples(path_or_file):
    """The list of examples of an examples file (a path, or an open file; "-" is standard
    input), checked for the shape zmix expects. ValueError names what is wrong."""
    import json
    import sys

    name = getattr(path_or_file, "name", path_or_file)
    try:
        if hasattr(path_or_file, "read"):
            doc = json.load(path_or_file)
        elif path_or_file == "-":
            name = "standard input"
            doc = json.load(sys.stdin)
        else:
            with open(path_or_file) as f:
                doc = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{name}: not JSON ({e})") from None
    if isinstance(doc, list):
        raise ValueError(f"{name}: the top level is a list, not a JSON object; expected "
                         f"{EXAMPLES_SHAPE} (put the list under \"examples\")")
    if not isinstance(doc, dict) or not isinstance(doc.get("examples"), list):
        raise ValueError(f"{name}: expected {EXAMPLES_SHAPE}")
    for i, ex in enumerate(doc["examples"]):
        where = f"{name}: examples[{i}]"
        if not isinstance(ex, dict) or "prompt" not in ex:
            raise ValueError(f"{where} is not an object with \"prompt\" and \"target\" (or "
                             f"\"choices\" and \"answer\"); expected {EXAMPLES_SHAPE}")
        _check_tokens(where + ".prompt", ex["prompt"])
        if "choices" in ex:  # multiple choice (PROTOCOL.md §4.5)
            choices = ex["choices"]
            if not isinstance(choices, list) or len(choices) < 2:
                raise ValueError(f"{where}.choices: expected a list of at least 2 choices")
            for c, choice in enumerate(choices):
                _check_tokens(f"{where}.choices[{c}]", choice)
            answer = ex.get("answer")
            if isinstance(answer, bool) or not isinstance(answer, int) or \
                    not 0 <= answer < len(choices):
                raise ValueError(f"{where}.answer: expected an int in [0, {len(choices)})")
        elif "target" in ex:
            _check_tokens(where + ".target", ex["target"])
        else:
            raise ValueError(f"{where} has neither \"target\" nor \"choices\"; expected "
                             f"{EXAMPLES_SHAPE}")
    return doc["examples"]


def _check_tokens(where, value):
    """A prompt, target or choice: non-empty token ids or text (text "" is allowed for a
    prompt only, where the tokenizer's BOS makes it a prompt)."""
    if isinstance(value, str):
        if value == "" and not where.endswith(".prompt"):
            raise ValueError(f"{where} is empty")
        return
    if not isinstance(value, list) or not value or \
            not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise ValueError(f"{where}: expected text or a non-empty list of token ids")


def _floats(data, as_numpy=False):
    """float32 little-endian bytes -> a list of floats, or a NumPy float32 array."""
    if as_numpy:
        try:
            import numpy
        except ImportError as e:
            raise ImportError("get(..., as_numpy=True) needs NumPy (python3-numpy)") from e
        return numpy.frombuffer(data, dtype="<f4").copy()
    return list(struct.unpack("<%df" % (len(data) // 4), data))


class Client:
    """One connection. Not thread-safe: use one Client per thread."""

    def __init__(self, address=None, timeout=30.0, token=None):
        """address: unix:PATH or tcp:HOST:PORT (default: $ZMIX_ADDR, else the daemon's
        default socket); token: sent with auth first (default: the contents of the file
        $ZMIX_TOKEN_FILE names, when set)."""
        self.address = address or default_address()
        if token is None and os.environ.get("ZMIX_TOKEN_FILE"):
            try:
                token = read_token_file(os.environ["ZMIX_TOKEN_FILE"])
            except (OSError, ValueError) as e:
                raise ValueError(f"ZMIX_TOKEN_FILE: {e}") from None
        self.timeout = timeout
        self._msgid = 0
        self._sock = self._connect(self.address)
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 30)
        # [method, params] received while waiting for responses (the latest 1000: a subscribed
        # client that never looks at them does not grow without bound).
        self.notifications = collections.deque(maxlen=1000)
        if token is not None:
            self.auth(token)

    def _connect(self, address):
        if address.startswith("unix:"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target = address[5:]
        elif address.startswith("tcp:"):
            host, _, port = address[4:].rpartition(":")
            host = host.strip("[]")
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                              socket.SOCK_STREAM)
            target = (host, int(port))
        else:
            raise ValueError(f"address {address!r}: expected unix:PATH or tcp:HOST:PORT")
        s.settimeout(self.timeout)
        try:
            s.connect(target)
        except OSError:
            s.close()
            raise
        return s

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- transport -------------------------------------------------------------------

    def send_raw(self, data):
        """Sends bytes as they are (for tests of malformed input)."""
        self._sock.sendall(data)

    def read_message(self, timeout=None):
        """Reads the next message of any kind ([1, ...] response or [2, ...] notification)."""
        self._sock.settimeout(self.timeout if timeout is None else timeout)
        while True:
            for msg in self._unpacker:
                return msg
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("connection closed by the daemon")
            self._unpacker.feed(chunk)

    def call(self, method, params=None, timeout=None):
        """Sends a request and returns its result, raising RpcError on an error response."""
        self._msgid = (self._msgid + 1) & 0xFFFFFFFF
        msgid = self._msgid
        self._sock.sendall(msgpack.packb([0, msgid, method, params or {}], use_bin_type=True))
        while True:
            msg = self.read_message(timeout)
            if msg[0] == 2:
                self.notifications.append(msg[1:])
                if msg[1] == "error":
                    err = msg[2]
                    raise RpcError(err.get("code"), err.get("message"))
                continue
            if msg[0] == 1 and msg[1] == msgid:
                if msg[2] is not None:
                    raise RpcError(msg[2].get("code"), msg[2].get("message"))
                return msg[3]

    # ---- one method per protocol method ------------------------------------------------

    def auth(self, token):
        return self.call("auth", {"token": token})

    def ping(self):
        return self.call("ping")

    def info(self):
        return self.call("info")

    def stats(self):
        return self.call("stats")

    def submit(self, task, examples, cem=None, priority=0, recompute=False, warm_start=None):
        """examples: [{"prompt": ids or text, "target": ids or text}, ...], or for multiple
        choice [{"prompt": ..., "choices": [ids or text, ...], "answer": index}, ...].
        warm_start: the name of a cached task whose α the search begins from."""
        params = {"task": task, "examples": examples, "priority": priority,
                  "recompute": recompute}
        if cem:
            params["cem"] = cem
        if warm_start is not None:
            params["warm_start"] = warm_start
        return self.call("submit", params)

    def status(self, job):
        return self.call("status", {"job": job})

    def wait(self, job, timeout=30.0):
        """Long-poll: returns {"timed_out": bool, "status": {...}} when the job ends or after
        timeout seconds (the socket timeout is stretched to cover it)."""
        return self.call("wait", {"job": job, "timeout": float(timeout)},
                         timeout=max(self.timeout, timeout + 10.0))

    def cancel(self, job):
        return self.call("cancel", {"job": job})

    def jobs(self, state=None):
        return self.call("jobs", {"state": state} if state else {})["jobs"]

    def get(self, task, vectors=True, document=False, as_numpy=False):
        """The cached result of a task; with vectors, "z" maps matrix name -> list of float
        (as_numpy: a NumPy float32 array); with document, "document" is the result document
        (JSON text, docs/cem.md)."""
        params = {"task": task, "vectors": vectors}
        if document:
            params["document"] = True
        r = self.call("get", params)
        if vectors and "z" in r:
            r["z"] = {name: _floats(raw, as_numpy) for name, raw in r["z"].items()}
        return r

    def history(self, job):
        """The per-generation record of a job's search."""
        return self.call("history", {"job": job})["history"]

    def tasks(self):
        return self.call("tasks")["tasks"]

    def evict(self, task):
        return self.call("evict", {"task": task})

    def generate(self, prompt, task=None, max_tokens=None, temperature=None, top_p=None,
                 seed=None, stop=None, timeout=None):
        """A continuation of prompt (token ids, or text when the model has a tokenizer) under a
        cached task's adaptation, or the base model without task. Returns {"tokens", "text",
        "finish_reason", "stop_token", "prompt_tokens", "task"}; unset options take the
        daemon's defaults (PROTOCOL.md, generate)."""
        params = {"prompt": prompt}
        for key, value in (("task", task), ("max_tokens", max_tokens),
                           ("temperature", temperature), ("top_p", top_p), ("seed", seed),
                           ("stop", stop)):
            if value is not None:
                params[key] = value
        return self.call("generate", params, timeout=timeout)

    def subscribe(self, on=True, job=None):
        """Progress notifications (collected in self.notifications, or read with
        read_message) for every job, or for one job."""
        params = {"on": on}
        if job is not None:
            params["job"] = job
        return self.call("subscribe", params)

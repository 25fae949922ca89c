"""Runs a step's command inside its container and stops it when the process that started
the container goes away.

Run as a script (``python3 .../tether.py papermill ...``), not as a module: it must work
in any image with a Python 3, importing nothing but the standard library.

Why: a container outlives the process that created it. When a runner or a Dask worker is
killed (``kill -9``, out of memory, a lost node), its step's container would go on writing
into folders that a retry, or the next run, uses. The starter attaches to the container's
stdin (``StdinOnce``); the engine closes that stdin when the starter's connection drops,
whoever the starter was and wherever it ran. This script sees end-of-file and stops the
command, and the container ends with it.

The starter's first line on that stdin is the step's secrets, as JSON (``{}`` when it has
none; a lane's container gets ``{}`` and ignores it): this script hands that line to the
command's stdin, which ``in_container`` reads, and nothing else. So secret values reach the step's kernel without being in the
container's configuration (``docker inspect``), its image or its command line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

GRACE_SECONDS = 3.0
# The exit code when the starter went away (128 + SIGTERM, as a shell reports it).
EXIT_STARTER_GONE = 143


def _stop(child: subprocess.Popen) -> None:  # type: ignore[type-arg]
    """SIGTERM the command's process group, then SIGKILL it after a grace period."""
    if child.poll() is not None:
        return
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(timeout=GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read_line(fd: int) -> bytes:
    """Bytes from ``fd`` up to and with the first newline (or end-of-file), byte by byte,
    so nothing after it is consumed."""
    line = bytearray()
    while True:
        byte = os.read(fd, 1)
        if not byte:
            return bytes(line)
        line += byte
        if byte == b"\n":
            return bytes(line)


def main(argv: list[str]) -> int:
    if not argv:
        sys.stderr.write("usage: tether.py COMMAND [ARG...]\n")
        return 2
    # the command starts at once (its imports overlap the wait for the first line);
    # its stdin gets the starter's first line whenever that comes
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, start_new_session=True)
    assert child.stdin is not None
    for signum in (signal.SIGTERM, signal.SIGINT):  # `docker stop` (through tini), Ctrl-C
        signal.signal(signum, lambda *_: _stop(child))
    header = _read_line(0)  # the secrets or job line (b"" when the starter sent none)
    try:
        child.stdin.write(header)
        child.stdin.close()
    except OSError:  # the command ended without reading it
        pass
    header = b""
    starter_gone = threading.Event()

    def watch_stdin() -> None:
        try:
            # the raw descriptor, not sys.stdin: a buffered reader's lock held by this
            # thread would make the interpreter's shutdown abort
            while os.read(0, 4096):
                pass  # nobody writes; read only returns b"" at end-of-file
        except OSError:
            pass
        if child.poll() is None:  # a command that has ended keeps its own exit code
            starter_gone.set()
            _stop(child)

    threading.Thread(target=watch_stdin, daemon=True).start()
    code = child.wait()
    if starter_gone.is_set():
        sys.stderr.write("mlpipe: the process that started this container went away; "
                         "the step was stopped\n")
        return EXIT_STARTER_GONE
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    status = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # without finalization: the stdin thread may still be blocked in read

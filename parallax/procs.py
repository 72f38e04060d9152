"""Start `parallax` subcommands as child processes and read what they print.

Used by `parallax demo`, `parallax bench pipeline` and the tests' cluster harness.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from parallax.errors import ParallaxError

PARALLAX = [sys.executable, "-m", "parallax"]


class ChildTimeout(ParallaxError, TimeoutError):
    """A child never printed the line we waited for (it exited, or took too long)."""


@dataclass
class Child:
    popen: subprocess.Popen
    lines: list[str] = field(default_factory=list)

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        rx, deadline, seen = re.compile(pattern), time.monotonic() + timeout, 0
        exited = False
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                if m := rx.search(line):
                    return m
            seen = len(self.lines)
            if exited:
                break
            # One more pass after the exit: the pump thread may still hold its last lines.
            exited = self.popen.poll() is not None
            time.sleep(0.05)
        tail = "\n".join(self.lines[-30:])
        raise ChildTimeout(f"no line matching {pattern!r} (exit {self.popen.poll()}):\n{tail}")

    def stop(self, timeout: float = 10.0) -> None:
        stop_all([self], timeout)


def stop_all(children: list[Child], timeout: float = 10.0) -> None:
    """SIGTERM every child at once, then SIGKILL those still running after `timeout` s
    (stopping them one by one would add their shutdown times up)."""
    for c in children:
        if c.popen.poll() is None:
            os.killpg(c.popen.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for c in children:
        try:
            c.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(c.popen.pid, signal.SIGKILL)
            c.popen.wait()


def spawn(
    args: list[str],
    env: dict[str, str] | None = None,
    echo: Callable[[str], None] | None = None,
) -> Child:
    """Run `parallax ARGS` in its own session; `echo` sees every line it prints."""
    p = subprocess.Popen(
        [*PARALLAX, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
        start_new_session=True,  # signals to us are not signals to it: we stop it in order
    )
    child = Child(p)

    def pump() -> None:
        for line in p.stdout:
            child.lines.append(line.rstrip("\n"))
            if echo is not None:
                echo(line)

    threading.Thread(target=pump, daemon=True).start()
    return child

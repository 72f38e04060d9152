"""Start `parallax` subcommands as child processes and read what they print.

Used by `parallax bench pipeline` to run a real local cluster.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from parallax.errors import ParallaxError


@dataclass
class Child:
    popen: subprocess.Popen
    lines: list[str] = field(default_factory=list)

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        rx, deadline, seen = re.compile(pattern), time.monotonic() + timeout, 0
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                if m := rx.search(line):
                    return m
            seen = len(self.lines)
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        tail = "\n".join(self.lines[-20:])
        raise ParallaxError(f"child never printed {pattern!r} (exit {self.popen.poll()}):\n{tail}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)


def spawn(args: list[str]) -> Child:
    p = subprocess.Popen(
        [sys.executable, "-m", "parallax", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        start_new_session=True,
    )
    child = Child(p)

    def pump() -> None:
        for line in p.stdout:
            child.lines.append(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return child

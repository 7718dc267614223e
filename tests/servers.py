"""Helpers for tests that start a real server process: a free port, and waiting until it answers."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import requests


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_answers(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float, every: float) -> None:
    """Poll ``url`` until it answers 200; fail with the log's tail if the process dies or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-4000:]
        time.sleep(every)

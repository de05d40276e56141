"""Shared fixtures of the veltix_rs test suite.

Rules: every server binds 127.0.0.1 port 0; nothing waits with sleep (events, queues and
conditions with generous timeouts); every server/client made by a fixture is closed at teardown.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

import veltix_rs as vx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(HERE))

#: Generous timeout for anything that should happen "soon".
T = 20.0

# Codes 200..210 are the ones the real-Veltix test peers register (tests/python/peer_common.py):
# they are registered once here, process-wide, and shared by every test module.
ECHO = vx.MessageType(200, "echo")
NOTE = vx.MessageType(201, "note")
CODES = {c: (ECHO if c == 200 else NOTE if c == 201 else vx.MessageType(c, f"t{c}")) for c in range(200, 211)}


def wait_until(cond: Callable[[], bool], timeout: float = T, what: str = "condition") -> None:
    """Wait (on a condition variable, polling cond) until cond() is true or fail."""
    ev = threading.Event()
    deadline = threading.Timer(timeout, ev.set)
    deadline.start()
    try:
        while not cond():
            if ev.wait(0.005):
                if cond():
                    return
                pytest.fail(f"timed out after {timeout}s waiting for {what}")
    finally:
        deadline.cancel()


class Inbox:
    """A thread-safe queue of things callbacks saw."""

    def __init__(self) -> None:
        self.q: "queue.Queue[Any]" = queue.Queue()

    def put(self, item: Any) -> None:
        self.q.put(item)

    def get(self, timeout: float = T) -> Any:
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"nothing arrived within {timeout}s")

    def take(self, n: int, timeout: float = T) -> list[Any]:
        return [self.get(timeout) for _ in range(n)]

    def empty(self) -> bool:
        return self.q.empty()


@pytest.fixture
def make_server():
    made: list[vx.Server] = []

    def make(**kw: Any) -> vx.Server:
        kw.setdefault("host", "127.0.0.1")
        kw.setdefault("port", 0)
        s = vx.Server(vx.ServerConfig(**kw))
        made.append(s)
        return s

    yield make
    for s in made:
        s.close_all()


@pytest.fixture
def make_client():
    made: list[vx.Client] = []

    def make(port: int, **kw: Any) -> vx.Client:
        kw.setdefault("server_addr", "127.0.0.1")
        c = vx.Client(vx.ClientConfig(port=port, **kw))
        made.append(c)
        return c

    yield make
    for c in made:
        c.disconnect()


@pytest.fixture
def echo_server(make_server):
    """A started server echoing ECHO messages (same id, ``echo:`` prefix)."""
    s = make_server()

    @s.route(ECHO)
    def echo(client: vx.ClientInfo, msg: vx.Response) -> None:
        s.send(vx.Request(ECHO, b"echo:" + msg.content).respond(msg), client)

    s.start()
    return s


def peer_python(version: str) -> str:
    """The interpreter of the real Python Veltix venv (scripts/setup-python.sh)."""
    py = ROOT / "target" / "py" / f"veltix-{version}" / "bin" / "python"
    if not py.exists():
        pytest.fail(f"{py} is missing: run bash scripts/setup-python.sh first (no skipping)")
    return str(py)


def package_python() -> str:
    return sys.executable


os.environ.setdefault("PYTHONUNBUFFERED", "1")

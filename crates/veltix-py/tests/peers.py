"""Drives the real Python Veltix test peers (tests/python/peer3.py, peer16.py) as processes,
through their JSON line protocol (see tests/python/peer_common.py)."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from typing import Any

import pytest

from conftest import ROOT, T, peer_python

SCRIPTS = {"3.3.0": ROOT / "tests" / "python" / "peer3.py", "1.6.9": ROOT / "tests" / "python" / "peer16.py"}


class Peer:
    """One real Veltix process (server or client)."""

    def __init__(self, version: str, role: str, *args: str) -> None:
        cmd = [peer_python(version), str(SCRIPTS[version]), role, *args, "--log-level", "WARNING"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self.events: "queue.Queue[dict]" = queue.Queue()
        self.replies: dict[int, "queue.Queue[dict]"] = {}
        self._lock = threading.Lock()
        self._next = 0
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            msg = json.loads(line)
            if "reply" in msg:
                with self._lock:
                    q = self.replies.setdefault(msg["reply"], queue.Queue())
                q.put(msg)
            else:
                self.events.put(msg)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def event(self, name: str, timeout: float = T) -> dict:
        """The next event called ``name`` (earlier events of other names are dropped)."""
        while True:
            try:
                ev = self.events.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"peer event {name!r} did not arrive; stderr:\n{''.join(self.stderr[-30:])}")
            if ev.get("event") == name:
                return ev

    def cmd(self, name: str, timeout: float = T, **kw: Any) -> dict:
        """Run a command and return its reply."""
        with self._lock:
            self._next += 1
            cid = self._next
            q = self.replies.setdefault(cid, queue.Queue())
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"id": cid, "cmd": name, **kw}) + "\n")
        self.proc.stdin.flush()
        try:
            return q.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"peer command {name!r} got no reply; stderr:\n{''.join(self.stderr[-30:])}")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=T)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

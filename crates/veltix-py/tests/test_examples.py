"""The Python versions of crates/veltix/examples (echo, chat, ping), run as processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import T

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def spawn(name: str, *args: str, stdin: bool = False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(EXAMPLES / name), *args], text=True, bufsize=1,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)


def read_port(proc: subprocess.Popen) -> int:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("listening on 127.0.0.1:"), line + (proc.stderr.read() if proc.stderr else "")
    return int(line.rsplit(":", 1)[1])


def run(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def procs():
    made: list[subprocess.Popen] = []
    yield made
    for p in made:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_echo_and_ping_examples(procs):
    server = spawn("echo_server.py")
    procs.append(server)
    port = read_port(server)
    r = run("echo_client.py", str(port), "hello there")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello there\n"
    r = run("ping.py", str(port), "3")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["seq=1", "seq=2", "seq=3"]
    assert all(line.endswith(" ms") for line in lines)
    # (Ctrl+C in wait_until_closed is tested deterministically in test_threading.py.)


def test_chat_example(procs):
    server = spawn("chat_server.py")
    procs.append(server)
    port = read_port(server)
    alice = spawn("chat_client.py", str(port), "alice", stdin=True)
    bob = spawn("chat_client.py", str(port), "bob", stdin=True)
    procs += [alice, bob]
    assert alice.stdout is not None and bob.stdout is not None
    assert alice.stdout.readline().startswith("welcome alice")
    assert bob.stdout.readline().startswith("welcome bob")
    assert alice.stdin is not None
    alice.stdin.write("hi bob\n")
    alice.stdin.flush()
    assert bob.stdout.readline() == "alice: hi bob\n"
    for p in (alice, bob):
        assert p.stdin is not None
        p.stdin.close()
        assert p.wait(timeout=T) == 0
    assert alice.stdout.read() == ""  # alice does not get her own line back

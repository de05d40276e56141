"""TLS and authentication in veltix_rs: ``ServerConfig(tls_cert, tls_key, tls_client_ca)``,
``ClientConfig(tls, tls_ca, tls_server_name, tls_cert, tls_key, token, meta)``,
``@server.authenticate`` and ``ClientInfo.tls``. Certificates are generated per run
(tests/certs.py); every server binds 127.0.0.1 port 0; nothing waits with sleep."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

import pytest

import veltix_rs as vx
import veltix_rs.v1 as v1
from veltix_rs.events import ErrorEvent

from certs import Pki, make_pki
from conftest import ECHO, NOTE, ROOT, T, Inbox, wait_until
from peers import Peer


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_server(make_server, pki: Pki, *, mtls: bool = False, echo: bool = True, **kw) -> vx.Server:
    s = make_server(tls_cert=pki.server_cert, tls_key=pki.server_key,
                    tls_client_ca=pki.ca if mtls else None, **kw)
    if echo:
        @s.route(ECHO)
        def on_echo(client, msg):
            s.send(vx.Request(ECHO, b"echo:" + msg.content).respond(msg), client)
    return s


def handshake_failures(s: vx.Server) -> dict:
    return s.stats()["handshake_failures"]


# ── TLS ─────────────────────────────────────────────────────────────────────────────────────


def test_tls_echo_send_and_wait_and_ping_both_ways(make_server, make_client, pki):
    s = tls_server(make_server, pki)
    infos = Inbox()
    s.on_connect(infos.put)
    s.start()
    c = make_client(s.port, tls_ca=pki.ca)
    pushed = Inbox()

    @c.route(NOTE)
    def on_note(resp):
        pushed.put(resp.content)
        c.send(vx.Request(NOTE, b"ack:" + resp.content).respond(resp))

    assert c.connect() is True and c.is_connected and c.last_error is None
    info = infos.get()
    assert info.tls is not None
    assert info.tls.protocol in ("TLSv1.3", "TLSv1.2") and info.tls.cipher
    assert info.tls.peer_subject is None and info.tls.peer_cn is None and info.tls.peer_certificate is None
    assert "TlsInfo(protocol=" in repr(info.tls)

    # Client -> server: a plain send answered through a route, send_and_wait, ping.
    replies = Inbox()
    c.route(ECHO)(lambda resp: replies.put(resp.content))
    assert c.send(vx.Request(ECHO, b"one"))
    assert replies.get() == b"echo:one"
    big = os.urandom(256 * 1024)  # several TLS records
    reply = c.send_and_wait(vx.Request(ECHO, big), timeout=T)
    assert reply is not None and reply.content == b"echo:" + big
    assert isinstance(c.ping_server(timeout=T), float)

    # Server -> client over the same TLS link.
    assert s.send(vx.Request(NOTE, b"push"), info)
    assert pushed.get() == b"push"
    back = s.send_and_wait(vx.Request(NOTE, b"q"), info, timeout=T)
    assert back is not None and back.content == b"ack:q"
    assert isinstance(s.ping_client(info, timeout=T), float)
    assert handshake_failures(s)["tls"] == 0


def test_tls_server_name_override_and_plaintext_default(make_server, make_client, pki):
    s = tls_server(make_server, pki)
    s.start()
    # The certificate is for localhost and 127.0.0.1: an explicit name that matches works...
    c = make_client(s.port, tls_ca=pki.ca, tls_server_name="localhost")
    assert c.connect()
    assert c.send_and_wait(vx.Request(ECHO, b"n"), timeout=T).content == b"echo:n"
    # ...one that does not is refused by the certificate check.
    wrong = make_client(s.port, tls_ca=pki.ca, tls_server_name="not-the-server.example")
    assert wrong.connect() is False and not wrong.is_connected
    assert "TLS" in wrong.last_error and "certificate" in wrong.last_error.lower()
    # A plaintext server has no TLS info on its clients.
    plain = make_server()
    got = Inbox()
    plain.on_connect(got.put)
    plain.start()
    pc = make_client(plain.port)
    assert pc.connect()
    assert got.get().tls is None


def test_wrong_ca_is_refused_and_other_clients_are_unaffected(make_server, make_client, pki):
    s = tls_server(make_server, pki)
    s.start()
    good = make_client(s.port, tls_ca=pki.ca)
    assert good.connect()
    bad = make_client(s.port, tls_ca=pki.other_ca)
    errors = Inbox()
    bad.bus.subscribe(ErrorEvent.NETWORK, lambda e, p: errors.put(p))
    assert bad.connect() is False
    assert "TLS handshake failed" in bad.last_error
    assert "TLS handshake failed" in errors.get()["error"]
    wait_until(lambda: handshake_failures(s)["tls"] >= 1, what="the server to count the TLS failure")
    assert good.send_and_wait(vx.Request(ECHO, b"still"), timeout=T).content == b"echo:still"


def test_plaintext_client_to_tls_server_and_tls_client_to_plaintext_server(make_server, make_client, pki):
    s = tls_server(make_server, pki, handshake_timeout=1.0)
    s.start()
    plain = make_client(s.port, handshake_timeout=T)
    assert plain.connect() is False and plain.last_error
    wait_until(lambda: handshake_failures(s)["tls"] >= 1, what="the TLS server to refuse plaintext")

    p = make_server(handshake_timeout=1.0)
    p.start()
    c = make_client(p.port, tls_ca=pki.ca, handshake_timeout=T)
    assert c.connect() is False and c.last_error
    assert p.clients == []


def test_system_roots_with_ssl_cert_file(make_server, pki):
    """``tls=True`` trusts the system store; SSL_CERT_FILE (honoured by the store loader)
    points it at our CA in a child process, so both outcomes are deterministic."""
    s = tls_server(make_server, pki)
    s.start()
    code = (
        "import sys, veltix_rs as vx\n"
        "c = vx.Client(vx.ClientConfig(server_addr='127.0.0.1', port=int(sys.argv[1]), tls=True))\n"
        "ok = c.connect()\n"
        "reply = c.send_and_wait(vx.Request(vx.MessageType(200, 'echo'), b'sys'), timeout=20) if ok else None\n"
        "print(ok, reply.content if reply else c.last_error)\n"
        "c.disconnect()\n"
    )
    env = dict(os.environ, SSL_CERT_FILE=str(pki.ca))
    env.pop("SSL_CERT_DIR", None)
    r = subprocess.run([sys.executable, "-c", code, str(s.port)], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True b'echo:sys'", r.stdout + r.stderr
    env["SSL_CERT_FILE"] = str(pki.other_ca)
    r = subprocess.run([sys.executable, "-c", code, str(s.port)], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("False ") and "TLS handshake failed" in r.stdout, r.stdout + r.stderr


# ── mutual TLS ──────────────────────────────────────────────────────────────────────────────


def test_mutual_tls_accepts_a_client_certificate(make_server, make_client, pki):
    s = tls_server(make_server, pki, mtls=True)
    seen = Inbox()

    @s.authenticate
    def check(request):
        seen.put(request)
        return request.certificate_cn == "sensor-17"

    infos = Inbox()
    s.on_connect(infos.put)
    s.start()
    c = make_client(s.port, tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.client_key)
    assert c.connect()
    req = seen.get()
    assert req.certificate_cn == "sensor-17"
    assert req.certificate_subject == "CN=sensor-17, O=Acme"
    assert req.tls is not None and req.tls.peer_cn == "sensor-17"
    info = infos.get()
    assert info.tls.peer_subject == "CN=sensor-17, O=Acme" and info.tls.peer_cn == "sensor-17"
    der = info.tls.peer_certificate
    assert isinstance(der, bytes) and der[:1] == b"\x30"  # a DER SEQUENCE
    assert c.send_and_wait(vx.Request(ECHO, b"m"), timeout=T).content == b"echo:m"


def test_mutual_tls_refuses_missing_and_foreign_client_certificates(make_server, make_client, pki):
    s = tls_server(make_server, pki, mtls=True)
    s.start()
    none = make_client(s.port, tls_ca=pki.ca)
    assert none.connect() is False and none.last_error
    foreign = make_client(s.port, tls_ca=pki.ca, tls_cert=pki.other_client_cert, tls_key=pki.other_client_key)
    assert foreign.connect() is False and foreign.last_error
    wait_until(lambda: handshake_failures(s)["tls"] >= 2, what="two TLS failures counted")
    assert s.clients == []
    ok = make_client(s.port, tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.client_key)
    assert ok.connect()


def test_v1_gen1_wire_over_mutual_tls_with_a_certificate_check(pki):
    """TLS on the Gen 1 wire (``veltix_rs.v1`` configs): Gen 1 has no hello meta, so the hook
    sees an empty meta and the certificate; a refused Gen 1 client is disconnected."""
    echo_type = v1.MessageType(200, "echo")
    s = v1.Server(v1.ServerConfig(host="127.0.0.1", port=0, tls_cert=pki.server_cert,
                                  tls_key=pki.server_key, tls_client_ca=pki.ca))
    seen = Inbox()
    allow = threading.Event()
    allow.set()

    @s.authenticate
    def check(request):
        seen.put((request.meta, request.certificate_cn))
        return allow.is_set() and request.certificate_cn == "sensor-17"

    @s.route(echo_type)
    def echo(response, client):
        s.get_sender().send(v1.Request(echo_type, b"v1:" + response.content,
                                       request_id=response.request_id), client=client.conn)

    s.start()
    clients = []
    try:
        c = v1.Client(v1.ClientConfig(server_addr="127.0.0.1", port=s.port, tls_ca=pki.ca,
                                      tls_cert=pki.client_cert, tls_key=pki.client_key))
        clients.append(c)
        assert c.connect()
        assert seen.get() == ({}, "sensor-17")
        reply = c.send_and_wait(v1.Request(echo_type, b"hi"), timeout=T)
        assert reply is not None and reply.content == b"v1:hi"
        assert isinstance(c.ping_server(timeout=T), int)
        assert s.get_all_clients_sockets()[0].tls.peer_cn == "sensor-17"
        allow.clear()
        refused = v1.Client(v1.ClientConfig(server_addr="127.0.0.1", port=s.port, tls_ca=pki.ca,
                                            tls_cert=pki.client_cert, tls_key=pki.client_key))
        clients.append(refused)
        # Gen 1 has no refusal message: the client's handshake ends with its own HELLO_ACK, so
        # its connect() may report success before the server's hook disconnects it.
        refused.connect()
        assert seen.get() == ({}, "sensor-17")
        wait_until(lambda: not refused.is_connected, what="the refused Gen 1 client to be dropped")
        wait_until(lambda: s.stats()["handshake_failures"]["auth"] == 1, what="the refusal counted")
        assert len(s.get_all_clients_sockets()) == 1
    finally:
        for c in clients:
            c.disconnect()
        s.close_all()


# ── bad files ───────────────────────────────────────────────────────────────────────────────


def test_bad_tls_files_raise_tls_config_error_at_start_and_connect(make_server, make_client, pki, tmp_path):
    missing = tmp_path / "missing.pem"
    s = make_server(tls_cert=missing, tls_key=pki.server_key)
    with pytest.raises(vx.TlsConfigError) as e:
        s.start()
    assert isinstance(e.value, ValueError) and str(missing) in str(e.value)
    assert not s.is_running

    # A key that belongs to another certificate.
    s = make_server(tls_cert=pki.server_cert, tls_key=pki.client_key)
    with pytest.raises(vx.TlsConfigError, match="do not make a usable certificate"):
        s.start()

    junk = tmp_path / "junk.pem"
    junk.write_text("this is not PEM\n")
    s = make_server(tls_cert=junk, tls_key=pki.server_key)
    with pytest.raises(vx.TlsConfigError):
        s.start()
    s = make_server(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=junk)
    with pytest.raises(vx.TlsConfigError):
        s.start()

    good = tls_server(make_server, pki)
    good.start()
    c = make_client(good.port, tls_ca=missing, retry=3, retry_delay=0.05)
    with pytest.raises(vx.TlsConfigError) as e:
        c.connect()
    assert str(missing) in str(e.value) and str(missing) in c.last_error
    assert not c.is_connected
    c = make_client(good.port, tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.server_key)
    with pytest.raises(vx.TlsConfigError, match="do not make a usable certificate"):
        c.connect()


def test_config_validation_of_the_new_options(pki):
    with pytest.raises(ValueError, match="tls_key"):
        vx.ServerConfig(tls_cert=pki.server_cert)
    with pytest.raises(ValueError, match="tls_cert"):
        vx.ServerConfig(tls_key=pki.server_key)
    with pytest.raises(ValueError, match="tls_client_ca"):
        vx.ServerConfig(tls_client_ca=pki.ca)
    with pytest.raises(TypeError, match="tls_cert"):
        vx.ServerConfig(tls_cert=123, tls_key=pki.server_key)
    with pytest.raises(ValueError):
        vx.ServerConfig(tls_cert="", tls_key=pki.server_key)
    assert vx.ServerConfig(tls_cert=str(pki.server_cert), tls_key=pki.server_key).tls
    assert not vx.ServerConfig().tls

    with pytest.raises(TypeError, match="tls"):
        vx.ClientConfig(tls=1)
    with pytest.raises(ValueError, match="tls=True"):
        vx.ClientConfig(tls_server_name="x")
    with pytest.raises(ValueError, match="tls=True"):
        vx.ClientConfig(tls_cert=pki.client_cert, tls_key=pki.client_key)
    with pytest.raises(ValueError, match="tls_key"):
        vx.ClientConfig(tls=True, tls_cert=pki.client_cert)
    with pytest.raises(ValueError):
        vx.ClientConfig(tls=True, tls_server_name="")
    with pytest.raises(TypeError, match="token"):
        vx.ClientConfig(token=5)
    with pytest.raises(ValueError, match="token"):
        vx.ClientConfig(token="")
    with pytest.raises(TypeError, match="meta"):
        vx.ClientConfig(meta=["x"])
    with pytest.raises(TypeError, match="meta"):
        vx.ClientConfig(meta={"x": object()})
    with pytest.raises(TypeError, match="meta"):
        vx.ClientConfig(meta={1: "x"})
    with pytest.raises(ValueError, match="disagree"):
        vx.ClientConfig(token="a", meta={"token": "b"})
    cfg = vx.ClientConfig(tls_ca=pki.ca, token="s3cret", meta={"device": "d1"})
    assert cfg.uses_tls and cfg.hello_meta() == {"device": "d1", "token": "s3cret"}
    assert "s3cret" not in repr(cfg) and "d1" not in repr(cfg)
    assert not vx.ClientConfig().uses_tls and vx.ClientConfig().hello_meta() == {}


# ── authentication ──────────────────────────────────────────────────────────────────────────


def test_token_auth_accepts_tags_and_rejects_with_a_visible_reason(make_server, make_client, pki):
    s = tls_server(make_server, pki)
    seen = Inbox()

    @s.authenticate
    def check(request):
        seen.put(request)
        if request.token == "s3cret":
            return vx.Accept(tags={"role": "admin", "device": request.meta.get("device")})
        return vx.Reject("bad token")

    assert check.__name__ == "check"  # the decorator returns the function
    infos = Inbox()
    s.on_connect(lambda c: infos.put((c, c.tags)))
    s.start()

    good = make_client(s.port, tls_ca=pki.ca, token="s3cret", meta={"device": "d-1"})
    assert good.connect()
    req = seen.get()
    assert req.peer[0] == "127.0.0.1" and req.peer == (req.ip, req.port) and req.port > 0
    assert req.meta == {"device": "d-1", "token": "s3cret"} and req.token == "s3cret"
    assert req.peer_version  # what our client announces
    assert req.tls is not None and req.certificate_cn is None and req.certificate_subject is None
    assert "s3cret" not in repr(req) and "token" in repr(req)
    info, tags_at_connect = infos.get()
    assert tags_at_connect == {"role": "admin", "device": "d-1"}  # set before on_connect
    assert info.get_tag("role") == "admin" and s.clients[0].has_tag("device")

    bad = make_client(s.port, tls_ca=pki.ca, token="guess", retry=3, retry_delay=0.05)
    refused = Inbox()
    bad.bus.subscribe(ErrorEvent.NETWORK, lambda e, p: refused.put(p["error"]))
    states = Inbox()
    bad.on_disconnect(states.put)
    assert bad.connect() is False  # as 3.3.0 reports a refusal after its hello; not retried
    assert bad.rejection_reason == "bad token" and not bad.is_connected
    assert bad.last_error == "server rejected the connection: bad token" == refused.get()
    state = states.get()
    assert state.permanent and state.attempt == 0
    assert seen.get().token == "guess"
    assert bad.stats()["handshake_failures"]["auth"] == 1
    wait_until(lambda: handshake_failures(s)["auth"] == 1, what="the server to count the refusal")
    assert s.clients == [info]
    assert good.send_and_wait(vx.Request(ECHO, b"ok"), timeout=T).content == b"echo:ok"


ACCEPTED = [True, None, vx.Accept(), vx.Accept(tags={"k": [1, "x"]}), {"k": 2}, (True, {"k": 3}), (True, None)]
REJECTED = [(False, "unauthorized"), ("nope", "nope"), (vx.Reject("why"), "why"), (vx.Reject(), "unauthorized"),
            ((False, "denied"), "denied"), ((False, None), "unauthorized"), ("", "unauthorized")]


@pytest.mark.parametrize("answer", ACCEPTED, ids=repr)
def test_hook_answers_that_accept(make_server, make_client, answer):
    s = make_server()
    s.authenticate(lambda request: answer)
    infos = Inbox()
    s.on_connect(lambda c: infos.put(c.tags))
    s.start()
    c = make_client(s.port)
    assert c.connect()
    tags = infos.get()
    expected = answer.tags if isinstance(answer, vx.Accept) else answer if isinstance(answer, dict) else (
        answer[1] or {} if isinstance(answer, tuple) else {})
    assert tags == expected


@pytest.mark.parametrize("answer,reason", REJECTED, ids=repr)
def test_hook_answers_that_reject(make_server, make_client, answer, reason):
    s = make_server()
    s.authenticate(lambda request: answer)
    s.start()
    c = make_client(s.port)
    assert c.connect() is False
    assert c.rejection_reason == reason and c.last_error.endswith(reason)


@pytest.mark.parametrize("hook", [
    lambda request: 1 / 0,
    lambda request: 42,                                 # no documented shape
    lambda request: vx.Accept(tags={"k": object()}),    # not JSON
    lambda request: {1: "x"},                           # tag name not a str
], ids=["raises", "bad-shape", "tag-not-json", "tag-name-not-str"])
def test_a_failing_hook_rejects_and_is_logged_with_its_traceback(make_server, make_client, caplog, hook):
    s = make_server()
    s.authenticate(hook)
    errors = Inbox()
    s.bus.subscribe(ErrorEvent.CALLBACK, lambda e, p: errors.put(p))
    s.start()
    c = make_client(s.port)
    with caplog.at_level(logging.ERROR, logger="veltix_rs"):
        assert c.connect() is False
        assert errors.get()["func"] == "<lambda>"
    assert c.rejection_reason == "authentication failed"
    records = [r for r in caplog.records if r.name == "veltix_rs" and r.exc_info]
    assert records and records[0].exc_info[2] is not None  # with its traceback
    assert "authenticate hook <lambda> raised" in records[0].getMessage()
    # The server goes on: a second client gets the same (refusal) answer, nothing is stuck.
    again = make_client(s.port)
    assert again.connect() is False and again.rejection_reason == "authentication failed"


def test_hook_signature_is_checked_and_a_hook_may_block_without_stalling_messages(make_server, make_client):
    s = make_server(max_workers=1)
    with pytest.raises(TypeError):
        s.authenticate(lambda: True)
    release = threading.Event()
    entered = threading.Event()

    @s.route(ECHO)
    def on_echo(client, msg):
        s.send(vx.Request(ECHO, msg.content).respond(msg), client)

    @s.authenticate
    def check(request):
        if request.token == "slow":
            entered.set()
            release.wait(T)  # holds its core thread, not the handler pool nor the GIL
        return True

    s.start()
    first = make_client(s.port)
    assert first.connect()
    slow = make_client(s.port, token="slow", handshake_timeout=T)
    done = Inbox()
    t = threading.Thread(target=lambda: done.put(slow.connect()))
    t.start()
    assert entered.wait(T)
    # While the hook blocks, the connected client's messages are handled (max_workers=1).
    assert first.send_and_wait(vx.Request(ECHO, b"during"), timeout=T).content == b"during"
    release.set()
    assert done.get() is True
    t.join(T)


def test_a_hook_that_does_not_answer_within_handshake_timeout_refuses_the_client(make_server, make_client):
    s = make_server(handshake_timeout=1.0)
    release = threading.Event()
    calls = Inbox()

    @s.authenticate
    def stuck(request):
        calls.put(request.token)
        if request.token == "stuck":
            release.wait(T)  # answers only after the client has given up
        return True

    s.start()
    try:
        c = make_client(s.port, token="stuck", handshake_timeout=T)
        assert c.connect() is False and not c.is_connected
        assert calls.get() == "stuck"
        assert handshake_failures(s)["auth"] == 1
        assert s.clients == []
    finally:
        release.set()
    # The late answer changes nothing, and the next client is served.
    ok = make_client(s.port, token="fine")
    assert ok.connect() and calls.get() == "fine"
    wait_until(lambda: len(s.clients) == 1, what="one client")


def test_hook_replaced_and_python_3_3_0_client_refused(make_server, pki):
    """A Python Veltix 3.3.0 client sends an empty meta: a token check refuses it and its
    connect() returns False (with either socket core); accepted once the (replaced) hook admits
    it by address."""
    s = make_server()
    s.authenticate(lambda r: r.token == "s3cret" or vx.Reject("unauthorized"))
    s.start()
    for n, core in enumerate(("async", "threading"), start=1):
        p = Peer("3.3.0", "client", "--port", str(s.port), "--socket-core", core)
        try:
            assert p.event("connect_failed")["error"] == "connect_failed"
        finally:
            p.close()
        wait_until(lambda: handshake_failures(s)["auth"] == n, what="the refusal to be counted")
    seen = Inbox()

    def by_address(r):
        seen.put((r.meta, r.peer_version))
        return r.ip == "127.0.0.1"

    s.authenticate(by_address)
    p = Peer("3.3.0", "client", "--port", str(s.port), "--echo")
    try:
        p.event("connected")
        assert seen.get() == ({}, "3.3.0")
    finally:
        p.close()


# ── the Rust CLI ────────────────────────────────────────────────────────────────────────────


def veltix_cli() -> str:
    exe = ROOT / "target" / "release" / "veltix"
    if not exe.exists():
        pytest.fail(f"{exe} is missing: run cargo build -p veltix-cli --release (scripts/test-python.sh does)")
    help_text = subprocess.run([str(exe), "serve", "--help"], capture_output=True, text=True, timeout=60).stdout
    if "--tls-cert" not in help_text:
        pytest.fail(f"{exe} has no --tls-cert: rebuild it (cargo build -p veltix-cli --release)")
    return str(exe)


def test_rs_tls_client_to_the_veltix_cli_server_with_a_token_file(make_client, pki, tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("alpha\n\n  s3cret  \n")
    proc = subprocess.Popen(
        [veltix_cli(), "serve", "--port", "0", "--tls-cert", str(pki.server_cert), "--tls-key",
         str(pki.server_key), "--auth-token-file", str(tokens)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        lines: "Inbox" = Inbox()
        threading.Thread(target=lambda: [lines.put(l) for l in proc.stdout], daemon=True).start()
        line = lines.get()
        assert line.startswith("listening on "), line
        port = int(line.strip().rsplit(":", 1)[1])
        c = make_client(port, tls_ca=pki.ca, token="s3cret")
        assert c.connect()
        reply = c.send_and_wait(vx.Request(ECHO, b"to the CLI"), timeout=T)
        assert reply is not None and reply.content == b"to the CLI"  # echo mode
        assert isinstance(c.ping_server(timeout=T), float)
        bad = make_client(port, tls_ca=pki.ca, token="guess")
        assert bad.connect() is False and bad.rejection_reason == "unauthorized"
        none = make_client(port, tls_ca=pki.ca)
        assert none.connect() is False and none.rejection_reason == "unauthorized"
        plain = make_client(port, token="s3cret")
        assert plain.connect() is False and plain.rejection_reason is None
        c.disconnect()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=T)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

//! The integration tests of the `Server`/`Client` API, run against both of its faces: the
//! blocking `Server`/`Client` and the async `AsyncServer`/`AsyncClient` (on a tokio runtime, with
//! async handlers). Each scenario is written once, generic over [`face::Face`], and run once per
//! face (`blocking_face::*`, `async_face::*`); raw-socket peers are the same for both, only the
//! server face differs. Plus what only the async face has: cancellation, `Incoming` streams,
//! mixing faces, and the async client against a real Python Veltix 3.3.0 server.
//!
//! Every wait is on an event with a generous timeout; every server binds port 0.

#[path = "../support/mod.rs"]
mod support;

mod face;
mod lifecycle;
mod messaging;
mod raw_peers;

use std::time::Duration;

use veltix::{AsyncClient, AsyncServer, ClientConfig, Request, ServerConfig};

use face::*;
use lifecycle::*;
use messaging::*;
use raw_peers::*;

macro_rules! both_faces {
    ($($name:ident),* $(,)?) => {
        mod blocking_face {
            $( #[test] fn $name() { super::$name::<super::Blocking>(); } )*
        }
        mod async_face {
            $( #[test] fn $name() { super::$name::<super::Async>(); } )*
        }
    };
}

both_faces!(
    // messaging
    scenario_request_reply,
    scenario_ping_both_ways,
    scenario_messages_of_one_connection_are_handled_in_order,
    scenario_messages_arriving_during_a_wait_keep_their_order,
    scenario_connections_are_handled_in_parallel_and_pings_inline,
    scenario_server_send_and_wait_is_correlated_per_connection,
    scenario_on_recv_is_the_fallback,
    scenario_broadcast_with_except_and_tags,
    scenario_reserved_type_codes_are_refused_before_sending,
    scenario_oversize_sends_are_refused_locally,
    // lifecycle
    scenario_connect_errors_are_typed,
    scenario_server_full_is_a_typed_error_and_frees_up,
    scenario_wrong_generation_fails_clearly_within_the_handshake_timeout,
    scenario_gen1_rust_to_rust,
    scenario_pending_waits_fail_fast_when_the_connection_drops,
    scenario_close_all_flushes_what_was_queued_and_restart_keeps_routes,
    scenario_close_all_returns_after_every_handler_and_on_disconnect_ran,
    scenario_wait_until_closed_returns_after_close_all,
    scenario_client_reconnects_after_a_server_restart_and_keeps_every_handler,
    scenario_retries_exhausted_give_the_python_sequence,
    scenario_stop_retry_ends_a_background_retry_loop,
    // raw peers
    scenario_abusive_peers_are_disconnected_and_others_keep_working,
    scenario_silent_connections_are_cut_at_the_handshake_timeout,
    scenario_a_peer_that_never_reads_fills_its_bounded_queue,
    scenario_keepalive_detects_a_silent_peer,
);

// ------------------------------------------------------------- blocking only

/// `send_slice` (a borrowed payload, no `Request`) on both sides: the peer gets the same
/// frames as from `send` (content, explicit or assigned id, order), and it refuses what `send`
/// refuses (a reserved type, a dead link) with the same typed errors.
#[test]
fn send_slice_sends_borrowed_payloads_like_send() {
    use std::sync::mpsc::channel;
    use veltix::{ClientInfo, DisconnectCause, Error, Response};

    let s = Blocking::server(ServerConfig::local());
    let (tx, got) = channel();
    let f = forward(tx);
    s.route(&NOTE, move |c: &ClientInfo, m: Response| {
        f((m.content().to_vec(), m.request_id()));
        // Answer from a borrowed buffer too, with the request's id.
        c.send_slice(&ECHO, Some(m.request_id()), &m.content()[..])
    });
    let connects = connects(&s);
    let gone = disconnects(&s);
    let addr = ServerApi::start(&s);
    let c = veltix::Client::new(ClientConfig::new("127.0.0.1", addr.port()));
    let (etx, echoes) = channel();
    let f = forward(etx);
    c.route(&ECHO, move |m: Response| {
        f((m.content().to_vec(), m.request_id()))
    });
    c.connect().unwrap();
    let info = recv(&connects);
    let mut buf = Vec::new();
    for i in 0..50u16 {
        buf.clear();
        buf.extend_from_slice(format!("slice {i}").as_bytes());
        let id = (i % 2 == 0).then_some(1000 + u32::from(i));
        c.send_slice(&NOTE, id, &buf).unwrap();
    }
    for i in 0..50u16 {
        let (content, id) = recv(&got);
        assert_eq!(content, format!("slice {i}").as_bytes());
        if i % 2 == 0 {
            assert_eq!(id, 1000 + u32::from(i));
        }
        assert_eq!(recv(&echoes), (content, id));
    }
    // Server -> client from a borrowed payload, with an assigned id.
    let (ntx, notes) = channel();
    let f = forward(ntx);
    c.route(&NOTE, move |m: Response| f(m.content().to_vec()));
    info.send_slice(&NOTE, None, b"to you").unwrap();
    assert_eq!(recv(&notes), b"to you");
    // What send refuses, send_slice refuses the same way.
    let e = c.send_slice(150u16, None, b"reserved").unwrap_err();
    assert!(
        matches!(
            e,
            Error::Protocol(veltix::proto::Error::ReservedTypeCode { .. })
        ),
        "{e}"
    );
    c.disconnect();
    let e = c.send_slice(&NOTE, None, b"late").unwrap_err();
    assert!(
        matches!(e, Error::Disconnected(DisconnectCause::ClosedLocally)),
        "{e:?}"
    );
    recv(&gone);
    let e = info.send_slice(&NOTE, None, b"late").unwrap_err();
    assert!(matches!(e, Error::Disconnected(_)), "{e:?}");
    s.close_all();
}

// ---------------------------------------------------------------- async only

#[test]
fn dropping_a_send_and_wait_future_releases_its_id() {
    let (_s, addr, _connects) = setup::<Async>(ServerConfig::local());
    let c = client::<Async>(addr);
    ClientApi::connect(&c).unwrap();
    rt().block_on(async {
        // HOLD never answers: cancel the wait by dropping the future.
        let pending = c.send_and_wait(Request::text(&HOLD, "x").with_request_id(42), T);
        assert!(tokio::time::timeout(Duration::from_millis(50), pending)
            .await
            .is_err());
        // Id 42 is free again: a new wait with the same explicit id is accepted and answered.
        let r = c
            .send_and_wait(Request::text(&ECHO, "again").with_request_id(42), T)
            .await;
        assert_eq!(r.unwrap().text().unwrap(), "echo:again");
    });
}

#[test]
fn incoming_streams_pull_messages() {
    let _g = rt().enter();
    let server = AsyncServer::new(ServerConfig::local());
    let mut incoming = server.incoming(16);
    let addr = server.start().unwrap();
    let client = AsyncClient::new(ClientConfig::new("127.0.0.1", addr.port()));
    let mut from_server = client.incoming(16);
    rt().block_on(async {
        client.connect().await.unwrap();
        for i in 0..100 {
            client
                .send(Request::text(&NOTE, &i.to_string()))
                .await
                .unwrap();
        }
        let mut who = None;
        for i in 0..100 {
            let (c, m) = tokio::time::timeout(T, incoming.next())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(m.text().unwrap(), i.to_string());
            who = Some(c);
        }
        let who = who.unwrap();
        server
            .send(Request::text(&NOTE, "pulled"), &who)
            .await
            .unwrap();
        let m = tokio::time::timeout(T, from_server.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.text().unwrap(), "pulled");
        // Graceful shutdown resolves once every connection is closed.
        tokio::time::timeout(T, server.close_all()).await.unwrap();
        tokio::time::timeout(T, server.wait_until_closed())
            .await
            .unwrap();
    });
}

#[test]
fn async_client_with_blocking_server_and_the_reverse() {
    // Async client -> blocking server.
    let (_s, addr, _c) = setup::<Blocking>(ServerConfig::local());
    let ac = client::<Async>(addr);
    ClientApi::connect(&ac).unwrap();
    assert_eq!(
        ClientApi::send_and_wait(&ac, Request::text(&ECHO, "a->b"), T)
            .unwrap()
            .text()
            .unwrap(),
        "echo:a->b"
    );
    // Blocking client -> async server.
    let (_s2, addr2, _c2) = setup::<Async>(ServerConfig::local());
    let bc = client::<Blocking>(addr2);
    bc.connect().unwrap();
    assert_eq!(
        bc.send_and_wait(Request::text(&ECHO, "b->a"), T)
            .unwrap()
            .text()
            .unwrap(),
        "echo:b->a"
    );
}

#[test]
fn async_client_against_a_real_python_server() {
    use support::python::{PyPeer, PyVersion};
    let py = PyPeer::server(PyVersion::V3_3_0, &["--echo"]);
    let _g = rt().enter();
    let client = AsyncClient::new(ClientConfig::new("127.0.0.1", py.port()));
    rt().block_on(async {
        client.connect().await.unwrap();
        let r = client
            .send_and_wait(Request::text(&ECHO, "from async"), T)
            .await
            .unwrap();
        assert_eq!(r.text().unwrap(), "echo:from async");
        assert!(client.ping(T).await.is_ok());
        client.disconnect().await;
    });
}

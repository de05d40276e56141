//! Scenarios about messages: request/response, ordering, parallelism, pings, routing, tags and
//! broadcast, and what is refused before sending.

use std::sync::mpsc::channel;
use std::sync::{Arc, Barrier, Mutex};

use serde_json::json;
use veltix::{ClientConfig, ClientInfo, Error, Request, Response, ServerConfig};

use crate::face::*;

/// Echoes of every payload kind both ways, request ids kept, replies from the server's client.
pub fn scenario_request_reply<F: Face>() {
    let (s, addr, connects) = setup::<F>(ServerConfig::local().max_message_size(32 * 1024 * 1024));
    let c =
        F::client(ClientConfig::new("127.0.0.1", addr.port()).max_message_size(32 * 1024 * 1024));
    answer_echo(&c);
    let events = events(&c);
    c.connect().unwrap();
    assert_eq!(recv(&events), "connect");
    let info = recv(&connects);
    let ask = |req: Request| echoed(c.send_and_wait(req, T));
    // Text (UTF-8), JSON (byte-identical to Python's json.dumps), binary, empty, large.
    let text = "héllo wörld €😀";
    assert_eq!(ask(Request::text(&ECHO, text)), text.as_bytes());
    let j = ask(Request::json(&ECHO, &json!({"a": [1, 2], "b": "é"})).unwrap());
    assert_eq!(&j[..], br#"{"a": [1, 2], "b": "\u00e9"}"#);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&j).unwrap()["b"],
        "é"
    );
    let bin: Vec<u8> = (0..=255).collect();
    assert_eq!(ask(Request::new(&ECHO, bin.clone())), bin);
    assert!(ask(Request::new(&ECHO, Vec::new())).is_empty());
    let big: Vec<u8> = (0..6 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let got = ask(Request::new(&ECHO, big.clone()));
    assert_eq!(got.len(), big.len());
    assert!(got == big);
    // Replies carry the request id we sent.
    let r = c
        .send_and_wait(Request::text(&ECHO, "x").with_request_id(777), T)
        .unwrap();
    assert_eq!(r.request_id(), 777);
    assert_eq!(r.text().unwrap(), "echo:x");
    // Server -> client.
    let r = s
        .send_and_wait(Request::text(&ECHO, "q"), &info, T)
        .unwrap();
    assert_eq!(r.text().unwrap(), "echo:q");
    c.disconnect();
    assert_eq!(recv(&events), "disconnect true 0 Manual");
    s.close_all();
}

/// Pings both ways, and several pings to one client in flight at once.
pub fn scenario_ping_both_ways<F: Face>() {
    let (s, addr, connects) = setup::<F>(ServerConfig::local());
    let c = connected::<F>(addr);
    let info = recv(&connects);
    assert!(c.ping().unwrap() < T);
    assert!(s.ping(&info).unwrap() < T);
    let rs = s.three_pings_at_once(&info);
    assert_eq!(rs.len(), 3);
    for r in rs {
        assert!(r.unwrap() < T);
    }
}

/// Messages of one connection are handled in arrival order: 5,000 client -> server with four
/// workers, and 500 server -> client.
pub fn scenario_messages_of_one_connection_are_handled_in_order<F: Face>() {
    let s = F::server(ServerConfig::local().max_workers(4));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = channel();
    let done = forward(tx);
    let s2 = seen.clone();
    s.route(&NOTE, move |_c: &ClientInfo, m: Response| {
        let n: u32 = m.text().unwrap().parse().unwrap();
        s2.lock().unwrap().push(n);
        if n == 4999 {
            done(());
        }
    });
    let connects = connects(&s);
    let addr = s.start();
    let c = client::<F>(addr);
    let notes = notes(&c);
    c.connect().unwrap();
    for i in 0..5000u32 {
        c.send(Request::text(&NOTE, &i.to_string())).unwrap();
    }
    recv(&rx);
    assert_eq!(*seen.lock().unwrap(), (0..5000).collect::<Vec<_>>());
    let info = recv(&connects);
    for i in 0..500 {
        s.send(Request::text(&NOTE, &i.to_string()), &info).unwrap();
    }
    for i in 0..500 {
        assert_eq!(recv(&notes), i.to_string());
    }
}

/// While a caller waits in `send_and_wait`, the server streams other messages before each
/// reply (and pings the client): every message reaches its handler once and in order, every
/// reply its caller. (A blocking caller reads the socket itself while it waits: what it decodes
/// for the handlers must be queued in arrival order.)
pub fn scenario_messages_arriving_during_a_wait_keep_their_order<F: Face>() {
    let s = F::server(ServerConfig::local());
    s.route(&ECHO, |c: &ClientInfo, m: Response| {
        let k = m.text().unwrap().to_string();
        for j in 0..50 {
            c.send(Request::text(&NOTE, &format!("{k}-{j}")))?;
        }
        c.send(echo_body(&m))
    });
    let connects = connects(&s);
    let addr = s.start();
    let c = client::<F>(addr);
    let notes = notes(&c);
    c.connect().unwrap();
    let info = recv(&connects);
    for k in 0..40 {
        if k % 10 == 0 {
            assert!(s.ping(&info).is_ok());
        }
        let reply = c.send_and_wait(Request::text(&ECHO, &k.to_string()), T);
        assert_eq!(echoed(reply), k.to_string().as_bytes());
    }
    for k in 0..40 {
        for j in 0..50 {
            assert_eq!(recv(&notes), format!("{k}-{j}"));
        }
    }
    assert!(notes.try_recv().is_err(), "a message was delivered twice");
}

/// Different connections are handled in parallel, and a slow handler does not hold up pings.
pub fn scenario_connections_are_handled_in_parallel_and_pings_inline<F: Face>() {
    let s = F::server(ServerConfig::local().max_workers(2));
    // Both handlers must be inside the barrier at once: only possible if they run in parallel.
    let barrier = Arc::new(Barrier::new(2));
    let (tx, rx) = channel();
    let f = forward(tx);
    s.route(&HOLD, move |c: &ClientInfo, m: Response| {
        barrier.wait();
        f(c.id());
        c.send(Request::text(&HOLD, "done").respond(&m))
    });
    let addr = s.start();
    let a = connected::<F>(addr);
    let b = connected::<F>(addr);
    a.send(Request::text(&HOLD, "a")).unwrap();
    // While a's handler is blocked in the barrier, pings are still answered (inline).
    assert!(a.ping().is_ok());
    assert!(b.ping().is_ok());
    b.send(Request::text(&HOLD, "b")).unwrap();
    let x = recv(&rx);
    let y = recv(&rx);
    assert_ne!(x, y);
}

/// The server's `send_and_wait` only takes the reply from the client it asked: another client
/// sending a frame with the same request id reaches `on_recv` instead.
pub fn scenario_server_send_and_wait_is_correlated_per_connection<F: Face>() {
    let s = F::server(ServerConfig::local());
    let connects = connects(&s);
    let (otx, orx) = channel();
    let other = forward(otx);
    s.on_recv(move |c: &ClientInfo, m: Response| other((c.id(), m.request_id())));
    let s = Arc::new(s);
    let addr = s.start();
    let a = connected::<F>(addr);
    let info_a = recv(&connects);
    let b = connected::<F>(addr);
    let info_b = recv(&connects);
    // a says when a request arrived, and answers only when told to.
    let (arrived_tx, arrived) = channel();
    let arrived_tx = forward(arrived_tx);
    let (go_tx, go_rx) = channel::<()>();
    let go_rx = Mutex::new(go_rx);
    let a_tx = a.sender();
    a.route(&ECHO, move |m: Response| {
        arrived_tx(m.request_id());
        go_rx.lock().unwrap().recv_timeout(T).ok();
        a_tx.send(Request::text(&ECHO, "from a").respond(&m))
    });
    let s2 = s.clone();
    let ia = info_a.clone();
    let waiter =
        std::thread::spawn(move || s2.send_and_wait(Request::text(&ECHO, "question"), &ia, T));
    // The server's wait is registered (ids are registered before sending): its id is the first
    // server-range id, 32768.
    assert_eq!(recv(&arrived), 32768);
    // b sends a frame carrying that id: it must reach on_recv, not a's waiter.
    b.send(Request::text(&NOTE, "impostor").with_request_id(32768))
        .unwrap();
    assert_eq!(recv(&orx), (info_b.id(), 32768));
    go_tx.send(()).unwrap();
    let reply = waiter.join().unwrap().unwrap();
    assert_eq!(reply.text().unwrap(), "from a");
    assert_eq!(reply.request_id(), 32768);
}

/// `on_recv` gets what no route takes; a route wins over it; a client without any handler
/// survives unsolicited messages.
pub fn scenario_on_recv_is_the_fallback<F: Face>() {
    let s = F::server(ServerConfig::local());
    let (tx, rx) = channel();
    let f = forward(tx);
    s.on_recv(move |_c: &ClientInfo, m: Response| f(m.message_type()));
    s.route(&ECHO, |c: &ClientInfo, m: Response| c.send(echo_body(&m)));
    let connects = connects(&s);
    let addr = s.start();
    let c = connected::<F>(addr);
    recv(&connects);
    c.send(Request::text(&NOTE, "to on_recv")).unwrap();
    assert_eq!(recv(&rx), NOTE.code());
    // A route wins over on_recv (handled in order: had it gone to on_recv, it would be there
    // before the reply).
    assert_eq!(
        echoed(c.send_and_wait(Request::text(&ECHO, "routed"), T)),
        b"routed"
    );
    assert!(rx.try_recv().is_err());
    // A client without any handler just logs unsolicited messages.
    let c2 = connected::<F>(addr);
    recv(&connects);
    assert_eq!(
        s.broadcast(Request::text(&NOTE, "nobody listens"), &[])
            .unwrap(),
        2
    );
    assert!(c2.ping().is_ok());
    assert!(c2.is_connected());
}

/// Broadcast to all and to all but some (checked per connection, in order), tags set by a
/// handler and queried by the server, the tag API through clones, and broadcasting from another
/// thread through the sender handle.
pub fn scenario_broadcast_with_except_and_tags<F: Face>() {
    let s = F::server(ServerConfig::local());
    let connects = connects(&s);
    s.route(&ECHO, |c: &ClientInfo, m: Response| {
        c.set_tag("room", m.text().unwrap_or(""));
        c.send(Request::text(&ECHO, "joined").respond(&m))
    });
    let addr = s.start();
    let mut clients = Vec::new();
    let mut notes_of = Vec::new();
    let mut infos = Vec::new();
    for i in 0..3 {
        let c = client::<F>(addr);
        notes_of.push(notes(&c));
        c.connect().unwrap();
        infos.push(recv(&connects));
        let room = if i == 2 { "blue" } else { "red" };
        let r = c.send_and_wait(Request::text(&ECHO, room), T).unwrap();
        assert_eq!(r.text().unwrap(), "joined");
        clients.push(c);
    }
    assert_eq!(s.clients().len(), 3);
    let mut red: Vec<u64> = s
        .get_clients_by_tag("room", Some(&json!("red")))
        .iter()
        .map(ClientInfo::id)
        .collect();
    red.sort();
    let mut want = vec![infos[0].id(), infos[1].id()];
    want.sort();
    assert_eq!(red, want);
    assert_eq!(s.get_clients_by_tag("room", None).len(), 3);
    assert!(s.get_clients_by_tag("nope", None).is_empty());
    assert_eq!(s.broadcast(Request::text(&NOTE, "all"), &[]).unwrap(), 3);
    assert_eq!(
        s.broadcast(Request::text(&NOTE, "most"), &infos[..1])
            .unwrap(),
        2
    );
    // Order per connection: a later "end" proves client 0 got no "most".
    assert_eq!(s.broadcast(Request::text(&NOTE, "end"), &[]).unwrap(), 3);
    for (i, n) in notes_of.iter().enumerate() {
        assert_eq!(recv(n), "all");
        if i != 0 {
            assert_eq!(recv(n), "most");
        }
        assert_eq!(recv(n), "end");
    }
    // Tag API, visible through every clone.
    let t = &infos[0];
    assert!(t.add_tag("admin", true));
    assert!(!t.add_tag("admin", false));
    assert_eq!(infos[0].clone().get_tag("admin"), Some(json!(true)));
    assert!(t.has_all_tags(&["admin", "room"]) && t.has_all_tags(&[]));
    assert!(t.has_any_tags(&["x", "admin"]) && !t.has_any_tags(&[]));
    assert!(t.remove_tag("admin") && !t.remove_tag("admin"));
    t.clear_tags();
    assert!(!t.has_tag("room"));
    assert_eq!(s.get_clients_by_tag("room", None).len(), 2);
    // The sender handle works from another thread.
    let sender = s.sender();
    let n = std::thread::spawn(move || {
        sender
            .broadcast(Request::text(&NOTE, "from thread"), &[])
            .unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(n, 3);
    for n in &notes_of {
        assert_eq!(recv(n), "from thread");
    }
}

/// Reserved type codes are refused locally, by clients and by broadcast; system and user
/// codes go out.
pub fn scenario_reserved_type_codes_are_refused_before_sending<F: Face>() {
    let (s, addr, _connects) = setup::<F>(ServerConfig::local());
    let c = connected::<F>(addr);
    for code in [2u16, 10, 150, 199] {
        let e = c.send(Request::text(code, "x")).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Protocol(veltix::proto::Error::ReservedTypeCode { .. })
            ),
            "{e}"
        );
    }
    assert!(s.broadcast(Request::text(5u16, "x"), &[]).is_err());
    // System types are allowed (a PING is answered with a PONG that reaches on_recv).
    assert!(c.send(Request::new(veltix::PING, Vec::new())).is_ok());
    assert!(c.send(Request::text(200u16, "user code")).is_ok());
}

/// A message over the client's own `max_message_size` is refused before sending.
pub fn scenario_oversize_sends_are_refused_locally<F: Face>() {
    let (_s, addr, _connects) = setup::<F>(ServerConfig::local());
    let c = F::client(ClientConfig::new("127.0.0.1", addr.port()).max_message_size(100));
    c.connect().unwrap();
    assert!(matches!(
        c.send(Request::new(&ECHO, vec![0u8; 100])),
        Err(Error::MessageTooLarge { .. })
    ));
    assert!(c.send(Request::new(&ECHO, vec![0u8; 85])).is_ok());
}

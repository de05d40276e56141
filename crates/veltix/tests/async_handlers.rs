//! Async handlers are runtime tasks: any number in flight at once (not capped by the handler
//! pool), while one connection's messages are still handled in arrival order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use veltix::{
    AsyncClient, AsyncServer, Client, ClientConfig, ClientInfo, Request, Response, ServerConfig,
};

/// Deadline of the whole exchange (generous: it is not a timing assertion).
const WAIT: Duration = Duration::from_secs(120);

const CONNECTIONS: usize = 1_000;

/// 1,000 connections send one message each; the async handler waits on a barrier of 1,000 that
/// only opens when all 1,000 handlers are in flight at once, then awaits a 100 ms timer and
/// answers. With handlers capped at the pool's 4 threads (or `max_workers`), the barrier would
/// never open and every request would time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_async_handlers_are_in_flight_at_once() {
    let server = AsyncServer::new(ServerConfig::local().max_workers(2));
    let barrier = Arc::new(tokio::sync::Barrier::new(CONNECTIONS));
    let b = barrier.clone();
    server.route_async(200u16, move |client: ClientInfo, msg: Response| {
        let b = b.clone();
        async move {
            b.wait().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.send(Request::new(201u16, msg.content().clone()).respond(&msg))
        }
    });
    let port = server.start().expect("start").port();

    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let c = AsyncClient::new(ClientConfig::new("127.0.0.1", port));
        c.connect().await.expect("connect");
        clients.push(Arc::new(c));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, c) in clients.iter().enumerate() {
        let c = c.clone();
        tasks.spawn(async move {
            let text = format!("hello {i}");
            let r = c
                .send_and_wait(Request::text(200u16, &text), WAIT)
                .await
                .expect("the handler answered");
            assert_eq!(r.text().expect("utf-8"), text);
        });
    }
    let all = async {
        while let Some(r) = tasks.join_next().await {
            r.expect("client task");
        }
    };
    tokio::time::timeout(WAIT, all)
        .await
        .expect("all 1,000 handlers were in flight together");
    for c in &clients {
        c.disconnect().await;
    }
    server.close_all().await;
}

/// One connection sends 40 messages; the handler of message `k` waits `40 - k` ms (earlier
/// messages wait longer), so if they overlapped they would finish out of order. A sync route
/// interleaved with them, and `on_disconnect`, see the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_handlers_of_one_connection_run_in_arrival_order() {
    const N: u32 = 40;
    let server = AsyncServer::new(ServerConfig::local());
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    server.route_async(200u16, move |_client: ClientInfo, msg: Response| {
        let s = s.clone();
        async move {
            let k: u32 = msg.text().unwrap_or("0").parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(u64::from(N - k))).await;
            s.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("async {k}"));
        }
    });
    let s = seen.clone();
    server.route(202u16, move |_c: &ClientInfo, msg: Response| {
        let k = msg.text().unwrap_or("?").to_string();
        s.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("sync {k}"));
    });
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let s = seen.clone();
    server.on_disconnect(move |_c| {
        s.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push("disconnect".into());
        let _ = done_tx.send(());
    });
    let port = server.start().expect("start").port();
    let client = AsyncClient::new(ClientConfig::new("127.0.0.1", port));
    client.connect().await.expect("connect");
    let mut want = Vec::new();
    for k in 0..N {
        client
            .send(Request::text(200u16, &k.to_string()))
            .await
            .expect("send");
        want.push(format!("async {k}"));
        if k % 10 == 9 {
            client
                .send(Request::text(202u16, &k.to_string()))
                .await
                .expect("send");
            want.push(format!("sync {k}"));
        }
    }
    client.disconnect().await;
    want.push("disconnect".into());
    tokio::time::timeout(WAIT, done_rx.recv())
        .await
        .expect("on_disconnect ran");
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(seen, want);
    server.close_all().await;
}

/// `incoming()` with a capacity of 1 and a consumer that only starts after everything was sent:
/// the connection's messages wait (on the runtime, holding no handler thread), none is lost, all
/// arrive in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_awaits_a_bounded_send() {
    let server = AsyncServer::new(ServerConfig::local());
    let mut incoming = server.incoming(1);
    let port = server.start().expect("start").port();
    let client = AsyncClient::new(ClientConfig::new("127.0.0.1", port));
    client.connect().await.expect("connect");
    for k in 0..100u32 {
        client
            .send(Request::text(200u16, &k.to_string()))
            .await
            .expect("send");
    }
    for k in 0..100u32 {
        let (_c, m) = tokio::time::timeout(WAIT, incoming.next())
            .await
            .expect("in time")
            .expect("a message");
        assert_eq!(m.text().expect("utf-8"), k.to_string());
    }
    client.disconnect().await;
    server.close_all().await;
}

/// The blocking API on the thread of the current-thread runtime that runs its I/O panics with a
/// clear message instead of deadlocking.
#[test]
fn blocking_call_on_a_current_thread_runtime_panics() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let r = rt.block_on(async {
        // The blocking face of a client whose I/O runs on this runtime.
        let client = Client::from(AsyncClient::new(ClientConfig::new("127.0.0.1", 9)));
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            client.wait_until_closed();
        }))
    });
    let err = r.expect_err("must panic, not deadlock");
    let msg = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(msg.contains("current-thread"), "{msg}");
}

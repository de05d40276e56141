//! `Server::around_handlers` / `Client::around_handlers`: every handler call runs inside the
//! wrapper, on the worker thread, and every message is handled exactly once.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use veltix::{Client, ClientConfig, ClientInfo, Request, Response, Server, ServerConfig};

thread_local! {
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

fn wrapper(batches: Arc<AtomicUsize>) -> impl Fn(&mut dyn FnMut()) + Send + Sync + 'static {
    move |batch: &mut dyn FnMut()| {
        batches.fetch_add(1, Ordering::Relaxed);
        INSIDE.with(|i| i.set(true));
        batch();
        INSIDE.with(|i| i.set(false));
    }
}

#[test]
fn server_and_client_handlers_run_inside_the_wrapper() {
    const N: usize = 500;
    let server = Server::new(ServerConfig::local());
    let server_batches = Arc::new(AtomicUsize::new(0));
    server.around_handlers(wrapper(server_batches.clone()));
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    server.route(200u16, move |c: &ClientInfo, m: Response| {
        let inside = INSIDE.with(|i| i.get());
        let _ = tx
            .lock()
            .unwrap()
            .send((inside, m.text().unwrap_or("").to_string()));
        c.send(Request::text(201u16, "back"))
    });
    let addr = server.start().unwrap();

    let client = Client::new(ClientConfig::new("127.0.0.1", addr.port()));
    let client_batches = Arc::new(AtomicUsize::new(0));
    client.around_handlers(wrapper(client_batches.clone()));
    let (ctx, crx) = channel();
    let ctx = Mutex::new(ctx);
    client.route(201u16, move |_m: Response| {
        let _ = ctx.lock().unwrap().send(INSIDE.with(|i| i.get()));
    });
    client.connect().unwrap();
    for i in 0..N {
        client.send(Request::text(200u16, &i.to_string())).unwrap();
    }
    for i in 0..N {
        let (inside, text) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(inside, "server handler ran outside the wrapper");
        assert_eq!(text, i.to_string(), "order kept");
    }
    for _ in 0..N {
        assert!(crx.recv_timeout(Duration::from_secs(20)).unwrap());
    }
    let sb = server_batches.load(Ordering::Relaxed);
    assert!((1..=N + 1).contains(&sb), "server batches: {sb}");
    assert!(client_batches.load(Ordering::Relaxed) >= 1);
    client.disconnect();
    server.close_all();
}

#[test]
fn a_wrapper_that_forgets_the_batch_loses_nothing() {
    let server = Server::new(ServerConfig::local());
    server.around_handlers(|_batch| {});
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    server.route(200u16, move |_c: &ClientInfo, m: Response| {
        let _ = tx.lock().unwrap().send(m.text().unwrap_or("").to_string());
    });
    let addr = server.start().unwrap();
    let client = Client::new(ClientConfig::new("127.0.0.1", addr.port()));
    client.connect().unwrap();
    client.send(Request::text(200u16, "x")).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), "x");
    client.disconnect();
    server.close_all();
}

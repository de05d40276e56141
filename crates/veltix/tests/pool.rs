//! The process-wide handler pool: its size follows the servers' and clients' claims and
//! `set_handler_threads`; handlers blocked in `send_and_wait` on the same pool do not deadlock;
//! a panicking handler does not kill the pool.
//!
//! The pool is process-wide, so these tests take turns (`EXCLUSIVE`) and reset the size when
//! they end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::time::Duration;

use veltix::{Client, ClientConfig, Request, Response, Server, ServerConfig};

const WAIT: Duration = Duration::from_secs(30);

static EXCLUSIVE: Mutex<()> = Mutex::new(());

/// One test at a time; the pool back to automatic sizing afterwards.
struct Turn(#[allow(dead_code)] MutexGuard<'static, ()>);

impl Turn {
    fn take() -> Turn {
        let g = EXCLUSIVE.lock().unwrap_or_else(|p| p.into_inner());
        veltix::set_handler_threads(None);
        Turn(g)
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        veltix::set_handler_threads(None);
    }
}

fn client(port: u16) -> Client {
    let c = Client::new(ClientConfig::new("127.0.0.1", port));
    c.connect().expect("connect");
    c
}

#[test]
fn size_follows_claims_and_the_override() {
    let _turn = Turn::take();
    assert_eq!(veltix::handler_threads(), veltix::DEFAULT_HANDLER_THREADS);
    let server = Server::new(ServerConfig::local().max_workers(7));
    assert_eq!(veltix::handler_threads(), 7);
    let small = Client::new(ClientConfig::new("127.0.0.1", 9).max_workers(2));
    assert_eq!(veltix::handler_threads(), 7, "the largest claim wins");
    let big = Client::new(ClientConfig::new("127.0.0.1", 9).max_workers(9));
    assert_eq!(veltix::handler_threads(), 9);
    drop(big);
    assert_eq!(
        veltix::handler_threads(),
        7,
        "a dropped client releases its claim"
    );
    veltix::set_handler_threads(Some(3));
    assert_eq!(
        veltix::handler_threads(),
        3,
        "the override beats the claims"
    );
    veltix::set_handler_threads(Some(0));
    assert_eq!(veltix::handler_threads(), 1, "at least one thread");
    veltix::set_handler_threads(None);
    assert_eq!(veltix::handler_threads(), 7);
    drop(server);
    drop(small);
    assert_eq!(veltix::handler_threads(), veltix::DEFAULT_HANDLER_THREADS);
}

/// Handlers of 8 connections wait together (a barrier of 3 releases them in threes): with the
/// pool fixed at 3 threads, at least 3 run at once (else the barrier would never open) and never
/// more than 3.
#[test]
fn handlers_run_on_as_many_threads_as_the_size() {
    let _turn = Turn::take();
    veltix::set_handler_threads(Some(3));
    let server = Server::new(ServerConfig::local().max_workers(1));
    let now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(3));
    let (n, m, b) = (now.clone(), most.clone(), barrier.clone());
    server.on_recv(move |c, msg: Response| {
        let in_flight = n.fetch_add(1, Ordering::SeqCst) + 1;
        m.fetch_max(in_flight, Ordering::SeqCst);
        b.wait();
        n.fetch_sub(1, Ordering::SeqCst);
        c.send(Request::new(201u16, msg.content().clone()).respond(&msg))
    });
    let port = server.start().expect("start").port();
    let clients: Vec<Client> = (0..6).map(|_| client(port)).collect();
    std::thread::scope(|s| {
        for c in &clients {
            s.spawn(|| {
                c.send_and_wait(Request::text(200u16, "x"), WAIT)
                    .expect("every handler ran");
            });
        }
    });
    assert_eq!(most.load(Ordering::SeqCst), 3);
    server.close_all();
}

/// The pool has 2 threads; the server's handlers of 2 connections first wait for each other (so
/// both threads are taken), then each sends a request to its client and waits for the reply,
/// which the client's handler, on the same pool, must produce. Without stand-in workers for
/// blocked handlers this cannot complete.
#[test]
fn handlers_blocked_in_send_and_wait_do_not_deadlock() {
    let _turn = Turn::take();
    veltix::set_handler_threads(Some(2));
    let server = Server::new(ServerConfig::local().max_workers(2));
    let together = Arc::new(Barrier::new(2));
    let t = together.clone();
    server.route(200u16, move |c, msg: Response| {
        t.wait();
        let answer = c.send_and_wait(Request::text(300u16, "question"), WAIT)?;
        c.send(Request::new(201u16, answer.content().clone()).respond(&msg))
    });
    let port = server.start().expect("start").port();
    let clients: Vec<Client> = (0..2)
        .map(|i| {
            let c = client(port);
            let tx = c.sender();
            c.route(300u16, move |q: Response| {
                tx.send(Request::text(301u16, &format!("answer {i}")).respond(&q))
            });
            c
        })
        .collect();
    std::thread::scope(|s| {
        for (i, c) in clients.iter().enumerate() {
            s.spawn(move || {
                let r = c
                    .send_and_wait(Request::text(200u16, "go"), WAIT)
                    .expect("no deadlock: the reply came");
                assert_eq!(r.text().expect("utf-8"), format!("answer {i}"));
            });
        }
    });
    server.close_all();
}

/// With a single pool thread, a handler that panics leaves the pool working for that connection
/// and for others.
#[test]
fn a_panicking_handler_does_not_kill_the_pool() {
    let _turn = Turn::take();
    veltix::set_handler_threads(Some(1));
    let server = Server::new(ServerConfig::local().max_workers(1));
    server.on_recv(|c, msg: Response| {
        if msg.text().ok() == Some("boom") {
            panic!("handler panics on purpose");
        }
        c.send(Request::new(201u16, msg.content().clone()).respond(&msg))
    });
    let port = server.start().expect("start").port();
    let a = client(port);
    let b = client(port);
    for _ in 0..3 {
        a.send(Request::text(200u16, "boom")).expect("send");
        let r = a
            .send_and_wait(Request::text(200u16, "after"), WAIT)
            .expect("the pool survived");
        assert_eq!(r.text().expect("utf-8"), "after");
        let r = b
            .send_and_wait(Request::text(200u16, "other"), WAIT)
            .expect("other connections too");
        assert_eq!(r.text().expect("utf-8"), "other");
    }
    server.close_all();
}

/// Handler threads of this process (the pool names them `veltix-worker-N`).
fn worker_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("veltix-worker"))
        .count()
}

/// The pool grows to its size when handlers wait together (a barrier of 5 that only opens with 5
/// handlers running at once), and once the size is lowered, the threads above it exit after
/// about 10 s idle (waited for with a generous deadline, not timed).
#[test]
fn threads_above_the_size_exit_when_idle() {
    let _turn = Turn::take();
    veltix::set_handler_threads(Some(5));
    let server = Server::new(ServerConfig::local().max_workers(1));
    let barrier = Arc::new(Barrier::new(5));
    let b = barrier.clone();
    server.on_recv(move |c, msg: Response| {
        if msg.text().ok() == Some("together") {
            b.wait();
        }
        c.send(Request::new(201u16, msg.content().clone()).respond(&msg))
    });
    let port = server.start().expect("start").port();
    let clients: Vec<Client> = (0..5).map(|_| client(port)).collect();
    std::thread::scope(|s| {
        for c in &clients {
            s.spawn(|| {
                c.send_and_wait(Request::text(200u16, "together"), WAIT)
                    .expect("all five ran at once");
            });
        }
    });
    assert!(worker_threads() >= 5);
    veltix::set_handler_threads(Some(1));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while worker_threads() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} handler threads still alive 60 s after the size went down to 1",
            worker_threads()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The one left still serves.
    let r = clients[0]
        .send_and_wait(Request::text(200u16, "x"), WAIT)
        .expect("the pool still works");
    assert_eq!(r.text().expect("utf-8"), "x");
    server.close_all();
}

thread_local! {
    static IN_RUN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

static RUNS: AtomicUsize = AtomicUsize::new(0);

fn counting_wrapper(run: &mut dyn FnMut()) {
    assert!(!IN_RUN.with(|r| r.get()), "runs do not nest");
    IN_RUN.with(|r| r.set(true));
    RUNS.fetch_add(1, Ordering::SeqCst);
    run();
    IN_RUN.with(|r| r.set(false));
}

/// `wrap_handler_runs`: every handler runs inside the wrapper (on the handler's thread), and the
/// wrapper is set once per process. Other tests of this binary run inside it too (it only
/// counts and marks).
#[test]
fn handlers_run_inside_the_run_wrapper() {
    let _turn = Turn::take();
    assert!(veltix::wrap_handler_runs(counting_wrapper));
    assert!(!veltix::wrap_handler_runs(counting_wrapper), "set once");
    let server = Server::new(ServerConfig::local());
    let outside = Arc::new(AtomicUsize::new(0));
    let o = outside.clone();
    server.on_recv(move |c, msg: Response| {
        if !IN_RUN.with(|r| r.get()) {
            o.fetch_add(1, Ordering::SeqCst);
        }
        c.send(Request::new(201u16, msg.content().clone()).respond(&msg))
    });
    let port = server.start().expect("start").port();
    let before = RUNS.load(Ordering::SeqCst);
    let clients: Vec<Client> = (0..4).map(|_| client(port)).collect();
    std::thread::scope(|s| {
        for c in &clients {
            s.spawn(move || {
                for i in 0..50 {
                    let r = c
                        .send_and_wait(Request::text(200u16, &i.to_string()), WAIT)
                        .expect("handled");
                    assert_eq!(r.text().expect("utf-8"), i.to_string());
                }
            });
        }
    });
    assert_eq!(
        outside.load(Ordering::SeqCst),
        0,
        "a handler ran outside the wrapper"
    );
    assert!(
        RUNS.load(Ordering::SeqCst) > before,
        "the wrapper was called"
    );
    server.close_all();
}

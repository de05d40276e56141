//! How the blocking face waits: the one piece between the blocking calls ([`Server`],
//! [`Client`], and the blocking methods of [`ClientInfo`], [`ClientSender`] and the cluster)
//! and the async core that [`AsyncServer`]/[`AsyncClient`] own.
//!
//! - [`block_on`] runs one of the async face's futures (`connect`, `disconnect`, `close_all`,
//!   `restart`, `wait_until_closed`, a cluster call) on the runtime that owns the server or
//!   client and parks the calling thread until it is done: the blocking face is the async face
//!   plus this wait.
//! - [`request`] and [`ping`] are the fast path of a blocking request/response, which bought the
//!   latency figures of `BENCHMARKS.md`: instead of `block_on(Conn::request)` (a task, a oneshot
//!   and a wake-up of the caller when the reply arrives), the caller registers a synchronous
//!   waiter and writes the request itself; when it is the connection's only waiter (and not on a
//!   handler thread, and not in `PerformanceMode::Low`) it then reads its own reply from the
//!   socket for up to a loopback round trip before parking (`Conn::request_blocking` and
//!   `Conn::spin_for_reply`).
//! - A send never waits, so it needs nothing here: the blocking `send` is the core's
//!   (`Conn::send`), which writes an isolated send to an idle link inline when it is called from
//!   a thread outside the runtime (one system call, no wake-up of the writer task), as the
//!   blocking face's callers are.
//!
//! Every wait here goes through `pool::blocking`: called from a handler, the handler thread
//! stops counting towards the pool while it waits, so a stand-in worker runs the other
//! handlers (among them, possibly, the one that sends the awaited reply).
//!
//! [`Server`]: crate::Server
//! [`Client`]: crate::Client
//! [`ClientInfo`]: crate::ClientInfo
//! [`ClientSender`]: crate::ClientSender
//! [`AsyncServer`]: crate::AsyncServer
//! [`AsyncClient`]: crate::AsyncClient

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::{Handle, RuntimeFlavor};

use crate::conn::Conn;
use crate::{Request, Response, Result};

/// Runs `fut` on `handle` and blocks the calling thread until it finishes. Works from any thread,
/// including a worker of another multi-threaded tokio runtime (it parks the thread instead of
/// nesting `block_on`, which would panic), and from a handler (through [`pool::blocking`], so
/// the handler pool is not starved meanwhile).
///
/// On a worker of a multi-threaded runtime (`handle`'s own or another), the wait runs in
/// [`tokio::task::block_in_place`]: the worker hands its queue, and the task spawned here that
/// may sit in it, to another thread before it parks. Without that, a blocking call from a task
/// of the server's own runtime (a `Server` on `Handle::current()` closed from a task) never
/// returned: the spawned task waited in that worker's next-task slot, which other workers do not
/// steal. It still blocks that worker: inside a tokio program the async face is the better way.
///
/// # Panics
/// On the thread of a current-thread runtime when `handle` is a current-thread runtime too (the
/// blocking API of a server or client created inside `#[tokio::main(flavor = "current_thread")]`
/// or `#[tokio::test]`, called from that runtime): that thread is the only one that can drive
/// the future, so waiting for it there would deadlock. The message says to use the async face
/// ([`AsyncServer`](crate::AsyncServer), [`AsyncClient`](crate::AsyncClient)) or a
/// multi-threaded runtime.
///
/// [`pool::blocking`]: crate::pool::blocking
pub(crate) fn block_on<F>(handle: &Handle, fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let Ok(current) = Handle::try_current() else {
        return crate::pool::blocking(|| handle.block_on(fut));
    };
    if current.runtime_flavor() == RuntimeFlavor::CurrentThread
        && handle.runtime_flavor() == RuntimeFlavor::CurrentThread
    {
        panic!(
            "a blocking veltix call (connect, disconnect, close_all, wait_until_closed...) was made \
             on the thread of the current-thread tokio runtime that runs its I/O: it would deadlock. \
             Use AsyncServer/AsyncClient and .await, or a multi-threaded runtime"
        );
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    let wait = || crate::pool::blocking(|| rx.recv());
    let got = if current.runtime_flavor() == RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(wait)
    } else {
        wait()
    };
    got.unwrap_or_else(|_| panic!("veltix runtime task was cancelled"))
}

/// A blocking request/response on `conn`: the fast path described in the module doc. Fails
/// with [`Error::Timeout`](crate::Error::Timeout), or [`Error::Disconnected`](crate::Error::Disconnected)
/// as soon as the link drops.
pub(crate) fn request(conn: &Arc<Conn>, req: &Request, timeout: Duration) -> Result<Response> {
    conn.request_blocking(req, timeout)
}

/// A blocking PING on `conn` (the same fast path); the round-trip time measured locally.
pub(crate) fn ping(conn: &Arc<Conn>, timeout: Duration) -> Result<Duration> {
    conn.ping_blocking(timeout)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use crate::{
        Client, ClientConfig, ClientInfo, PerformanceMode, Request, Response, Server, ServerConfig,
    };

    const T: Duration = Duration::from_secs(10);
    const ECHO: u16 = 200;
    const ASK: u16 = 201;
    const QUESTION: u16 = 202;

    fn runtime(workers: usize) -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn echo_server(mode: PerformanceMode) -> (Server, u16) {
        let server = Server::new(ServerConfig::local().performance_mode(mode));
        server.route(ECHO, |c: &ClientInfo, m: Response| {
            c.send(Request::new(ECHO, m.content().clone()).respond(&m))
        });
        let port = server.start().expect("start").port();
        (server, port)
    }

    /// From a plain thread, and from a worker of another multi-threaded runtime (a tokio program
    /// using a blocking server or client on the shared runtime), the future runs on `handle`'s
    /// runtime and its output comes back.
    #[test]
    fn block_on_waits_from_a_plain_thread_and_from_another_runtime() {
        let io = runtime(1);
        let h = io.handle().clone();
        let on_io = |h: &tokio::runtime::Handle| {
            super::block_on(h, async {
                tokio::task::yield_now().await;
                tokio::runtime::Handle::current().runtime_flavor()
            })
        };
        assert_eq!(on_io(&h), tokio::runtime::RuntimeFlavor::MultiThread);
        let user = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let h2 = h.clone();
        let from_user = user.block_on(async move { on_io(&h2) });
        assert_eq!(from_user, tokio::runtime::RuntimeFlavor::MultiThread);
        let user = runtime(2);
        let from_worker = user
            .block_on(async move { tokio::spawn(async move { on_io(&h) }).await.expect("task") });
        assert_eq!(from_worker, tokio::runtime::RuntimeFlavor::MultiThread);
    }

    /// A blocking call from a task of the server's own multi-threaded runtime returns (it hung
    /// before `block_in_place`: the future's task sat in the calling worker's next-task slot).
    /// Run on a runtime of one worker, so no other worker could have picked the task up anyway.
    #[test]
    fn block_on_from_a_task_of_the_servers_own_runtime_returns() {
        let rt = runtime(1);
        let (tx, rx) = mpsc::channel();
        rt.spawn(async move {
            let server =
                Server::with_handle(ServerConfig::local(), tokio::runtime::Handle::current());
            let started = server.start().is_ok();
            // From this task: the blocking close_all waits for a future of this runtime.
            server.close_all();
            let _ = tx.send(started && !server.is_running());
        });
        let got = rx.recv_timeout(T);
        if got.is_err() {
            // The task hangs: dropping the runtime would wait for it forever; fail instead.
            std::mem::forget(rt);
        }
        assert_eq!(got, Ok(true));
    }

    /// The lone waiter (one request in flight, a plain thread) gets its own reply, whether it
    /// reads it itself (`Balanced`, `High`) or parks until the I/O thread delivers it (`Low`),
    /// and every reply is the one to its own request.
    #[test]
    fn a_lone_waiter_gets_its_reply_in_every_mode() {
        for mode in [
            PerformanceMode::Low,
            PerformanceMode::Balanced,
            PerformanceMode::High,
        ] {
            let (server, port) = echo_server(mode);
            let client = Client::new(ClientConfig::new("127.0.0.1", port).performance_mode(mode));
            client.connect().expect("connect");
            let conn = client.as_async().shared.conn().expect("link");
            for i in 0..50 {
                let text = format!("{mode:?} {i}");
                let reply = super::request(&conn, &Request::text(ECHO, &text), T).expect("reply");
                assert_eq!(reply.text().expect("utf-8"), text);
            }
            assert!(super::ping(&conn, T).is_ok());
            client.disconnect();
            server.close_all();
        }
    }

    /// A handler that makes a blocking request to its own client, whose handler answers on the
    /// same process-wide pool, gets the answer: its wait hands its pool slot to a stand-in.
    #[test]
    fn a_blocking_request_from_a_handler_does_not_deadlock() {
        let server = Server::new(ServerConfig::local().max_workers(1));
        server.route(ASK, |c: &ClientInfo, m: Response| {
            let answer = c.send_and_wait(Request::text(QUESTION, "6 x 7?"), T)?;
            c.send(Request::new(ASK, answer.content().clone()).respond(&m))
        });
        let port = server.start().expect("start").port();
        let client = Client::new(ClientConfig::new("127.0.0.1", port).max_workers(1));
        let (tx, questions) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let sender = client.sender();
        client.route(QUESTION, move |m: Response| {
            let _ = crate::util::lock(&tx).send(m.text().map(str::to_string).ok());
            sender.send(Request::text(QUESTION, "42").respond(&m))
        });
        client.connect().expect("connect");
        let reply = client
            .send_and_wait(Request::text(ASK, "go"), T)
            .expect("reply");
        assert_eq!(reply.text().expect("utf-8"), "42");
        assert_eq!(
            questions.recv_timeout(T).expect("asked").as_deref(),
            Some("6 x 7?")
        );
        client.disconnect();
        server.close_all();
    }
}

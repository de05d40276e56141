//! Async request deadlines: no tokio timer per request, the connection's one timer task expires
//! the waiters of its pending table. An async `send_and_wait` that gets no answer must still
//! fail with `Error::Timeout` (never `Disconnected`), with keep-alive off and on, and a short
//! timeout issued after a long one must not wait for the long one's deadline.
//! Without keep-alive the timer task is spawned by the first timed request and ends with the link.
//!
//! Assertions are on the error kind; the only timing is a generous outer bound (a wait that
//! never times out would otherwise hang the test).

use std::time::Duration;

use veltix::{
    AsyncClient, ClientConfig, ClientInfo, Error, KeepAlive, MessageType, Request, Response,
    Server, ServerConfig,
};

const HOLD: MessageType = MessageType::new(202, "hold");
const ECHO: MessageType = MessageType::new(201, "echo");
/// The outer bound on any wait: far above every timeout used here.
const MARGIN: Duration = Duration::from_secs(20);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A server whose HOLD route never answers and whose ECHO route does.
fn server(keepalive: Option<KeepAlive>) -> (Server, u16) {
    let mut cfg = ServerConfig::local();
    cfg.settings.keepalive = keepalive;
    let s = Server::new(cfg);
    s.route(&HOLD, |_c: &ClientInfo, _m: Response| {});
    s.route(&ECHO, |c: &ClientInfo, m: Response| {
        c.send(Request::new(ECHO, m.content().clone()).respond(&m))
    });
    let addr = s.start().expect("start");
    (s, addr.port())
}

fn client(port: u16, keepalive: Option<KeepAlive>) -> AsyncClient {
    let mut cfg = ClientConfig::new("127.0.0.1", port);
    cfg.settings.keepalive = keepalive;
    AsyncClient::new(cfg)
}

fn keepalive_cases() -> [Option<KeepAlive>; 2] {
    [
        None,
        // Pings every 50 ms: the timer task wakes for keep-alive long before the request's
        // deadline, and must still expire the request at its own deadline.
        Some(KeepAlive::new(
            Duration::from_millis(50),
            Duration::from_secs(30),
        )),
    ]
}

/// Runs `scenario` with a connected async client of a [`server`], with keep-alive off and on.
fn with_each_keepalive<F, Fut>(scenario: F)
where
    F: Fn(AsyncClient, Option<KeepAlive>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let rt = runtime();
    for ka in keepalive_cases() {
        let (_server, port) = server(ka);
        let _g = rt.enter();
        let c = client(port, ka);
        rt.block_on(async {
            c.connect().await.expect("connect");
            scenario(c, ka).await;
        });
    }
}

#[test]
fn an_unanswered_async_request_times_out() {
    with_each_keepalive(|c, ka| async move {
        let timeout = Duration::from_millis(200);
        for _ in 0..3 {
            assert_times_out(&c, timeout, timeout + MARGIN, &format!("keep-alive {ka:?}")).await;
        }
        // The link is fine and the timed-out ids were released: requests still work.
        let r = c
            .send_and_wait(Request::text(&ECHO, "still here"), MARGIN)
            .await
            .expect("echo after the timeouts");
        assert_eq!(r.text().unwrap(), "still here");
        // So does an async ping.
        c.ping(MARGIN).await.expect("ping");
    });
}

#[test]
fn a_short_timeout_after_a_long_one_wakes_the_timer() {
    with_each_keepalive(|c, ka| async move {
        let long = Duration::from_secs(3600);
        let short = Duration::from_millis(100);
        let long_wait = c.send_and_wait(Request::text(&HOLD, "long"), long);
        tokio::pin!(long_wait);
        // Registers the long request (the timer task now sleeps on its deadline; a round
        // trip gives it the time to get there).
        assert!(futures_poll_once(&mut long_wait).await.is_none());
        c.send_and_wait(Request::text(&ECHO, "sync"), MARGIN)
            .await
            .expect("echo");
        // Within MARGIN: it must not wait for the long one's deadline.
        assert_times_out(
            &c,
            short,
            MARGIN,
            &format!("keep-alive {ka:?}, short after long"),
        )
        .await;
        // The long one is still waiting, not failed.
        assert!(futures_poll_once(&mut long_wait).await.is_none());
    });
}

/// Sends a HOLD request (never answered) with `timeout` and asserts that it fails with exactly
/// `Error::Timeout(timeout)` within `within` (`what` names the case in a failure).
async fn assert_times_out(c: &AsyncClient, timeout: Duration, within: Duration, what: &str) {
    let r = tokio::time::timeout(
        within,
        c.send_and_wait(Request::text(&HOLD, "never answered"), timeout),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: the request did not time out within {within:?}"));
    match r {
        Err(Error::Timeout(d)) => assert_eq!(d, timeout, "{what}"),
        other => panic!("{what}: expected Timeout, got {other:?}"),
    }
}

/// Polls a future once: `Some` if it completed.
async fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut *f).poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

/// Without keep-alive a connection's timer task is spawned by its first async request with a
/// deadline, once, and ends with the connection (it holds the connection's state: a task left
/// behind would keep it alive forever). Counted with the runtime's live-task metric; the
/// client's connection runs on this runtime, the server on the shared one.
#[test]
fn without_keepalive_the_timer_task_starts_with_the_first_timed_request_and_ends_with_the_link() {
    let rt = runtime();
    let (_server, port) = server(None);
    let alive = || rt.metrics().num_alive_tasks();
    let before = alive();
    let c = {
        let _g = rt.enter();
        client(port, None)
    };
    rt.block_on(async {
        c.connect().await.expect("connect");
        let connected = alive();
        // A plain send needs no timer.
        c.send(Request::text(&HOLD, "plain")).await.expect("send");
        c.send_and_wait(Request::text(&ECHO, "first"), MARGIN)
            .await
            .expect("echo");
        assert_eq!(
            alive(),
            connected + 1,
            "the first timed request spawns one timer task"
        );
        for _ in 0..3 {
            c.send_and_wait(Request::text(&ECHO, "again"), MARGIN)
                .await
                .expect("echo");
        }
        let timeout = Duration::from_millis(50);
        assert_times_out(&c, timeout, timeout + MARGIN, "no keep-alive").await;
        assert_eq!(alive(), connected + 1, "later requests reuse it");
        c.disconnect().await;
        let give_up = std::time::Instant::now() + MARGIN;
        while alive() > before {
            assert!(
                std::time::Instant::now() < give_up,
                "{} tasks still alive after the disconnect (before the client: {before})",
                alive()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
}

//! The same scenarios run against both faces of the API: the blocking `Server`/`Client` and the
//! async `AsyncServer`/`AsyncClient` (driven from a tokio runtime, with async handlers). Plus
//! what only the async face has: cancellation, `Incoming` streams, mixing faces, and the async
//! client against a real Python Veltix 3.3.0 server.

mod support;

use std::net::SocketAddr;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use veltix::{
    AsyncClient, AsyncServer, Client, ClientConfig, ClientInfo, Error, MessageType,
    ReconnectPolicy, Request, Response, Server, ServerConfig,
};

const ECHO: MessageType = MessageType::new(200, "echo");
const NOTE: MessageType = MessageType::new(201, "note");
const HOLD: MessageType = MessageType::new(202, "hold");
const T: Duration = Duration::from_secs(10);

fn recv<T>(rx: &Receiver<T>) -> T {
    rx.recv_timeout(T).expect("event did not arrive in time")
}

fn forward<T: Send + 'static>(tx: Sender<T>) -> impl Fn(T) + Send + Sync + 'static {
    let tx = Mutex::new(tx);
    move |v| {
        let _ = tx.lock().unwrap().send(v);
    }
}

fn echo_body(m: &Response) -> Request {
    let mut body = b"echo:".to_vec();
    body.extend_from_slice(m.content());
    Request::new(m.message_type(), body).respond(m)
}

/// What the scenarios need from a server, whichever face provides it.
trait ServerApi: Send + Sync {
    fn start(&self) -> SocketAddr;
    /// ECHO answers `"echo:" + content`; HOLD never answers.
    fn install_routes(&self);
    fn connects(&self) -> Receiver<ClientInfo>;
    fn send_and_wait(&self, req: Request, c: &ClientInfo, t: Duration) -> veltix::Result<Response>;
    fn ping(&self, c: &ClientInfo) -> veltix::Result<Duration>;
    fn broadcast(&self, req: Request, except: &[ClientInfo]) -> veltix::Result<usize>;
    fn close_all(&self);
    fn restart(&self) -> SocketAddr;
}

/// What the scenarios need from a client.
trait ClientApi: Send + Sync {
    fn connect(&self) -> veltix::Result<()>;
    /// ECHO requests from the server are answered with `"echo:" + content`; NOTE messages are
    /// forwarded to the returned channel; connects and disconnects are reported as strings.
    fn install(&self) -> (Receiver<Response>, Receiver<String>);
    fn send(&self, req: Request) -> veltix::Result<()>;
    fn send_and_wait(&self, req: Request, t: Duration) -> veltix::Result<Response>;
    fn ping(&self) -> veltix::Result<Duration>;
    fn disconnect(&self);
}

trait Face {
    type S: ServerApi + 'static;
    type C: ClientApi + 'static;
    fn server(cfg: ServerConfig) -> Self::S;
    fn client(cfg: ClientConfig) -> Self::C;
}

struct Blocking;
impl Face for Blocking {
    type S = Server;
    type C = Client;
    fn server(cfg: ServerConfig) -> Server {
        Server::new(cfg)
    }
    fn client(cfg: ClientConfig) -> Client {
        Client::new(cfg)
    }
}

impl ServerApi for Server {
    fn start(&self) -> SocketAddr {
        Server::start(self).expect("start")
    }
    fn install_routes(&self) {
        self.route(&ECHO, |c: &ClientInfo, m: Response| c.send(echo_body(&m)));
        self.route(&HOLD, |_c: &ClientInfo, _m: Response| {});
    }
    fn connects(&self) -> Receiver<ClientInfo> {
        let (tx, rx) = channel();
        let f = forward(tx);
        self.on_connect(move |c: &ClientInfo| f(c.clone()));
        rx
    }
    fn send_and_wait(&self, req: Request, c: &ClientInfo, t: Duration) -> veltix::Result<Response> {
        Server::send_and_wait(self, req, c, t)
    }
    fn ping(&self, c: &ClientInfo) -> veltix::Result<Duration> {
        self.ping_client(c, T)
    }
    fn broadcast(&self, req: Request, except: &[ClientInfo]) -> veltix::Result<usize> {
        Server::broadcast(self, req, except)
    }
    fn close_all(&self) {
        Server::close_all(self)
    }
    fn restart(&self) -> SocketAddr {
        Server::restart(self).expect("restart")
    }
}

impl ClientApi for Client {
    fn connect(&self) -> veltix::Result<()> {
        Client::connect(self)
    }
    fn install(&self) -> (Receiver<Response>, Receiver<String>) {
        let tx = self.sender();
        self.route(&ECHO, move |m: Response| tx.send(echo_body(&m)));
        let (ntx, nrx) = channel();
        let f = forward(ntx);
        self.route(&NOTE, move |m: Response| f(m));
        let (etx, erx) = channel();
        let f1 = forward(etx.clone());
        self.on_connect(move || f1("connect".to_string()));
        let f2 = forward(etx);
        self.on_disconnect(move |s| f2(format!("disconnect {} {}", s.permanent, s.attempt)));
        (nrx, erx)
    }
    fn send(&self, req: Request) -> veltix::Result<()> {
        Client::send(self, req)
    }
    fn send_and_wait(&self, req: Request, t: Duration) -> veltix::Result<Response> {
        Client::send_and_wait(self, req, t)
    }
    fn ping(&self) -> veltix::Result<Duration> {
        self.ping_server(T)
    }
    fn disconnect(&self) {
        Client::disconnect(self)
    }
}

fn rt() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime")
    })
}

struct Async;
impl Face for Async {
    type S = AsyncServer;
    type C = AsyncClient;
    fn server(cfg: ServerConfig) -> AsyncServer {
        let _g = rt().enter();
        AsyncServer::new(cfg)
    }
    fn client(cfg: ClientConfig) -> AsyncClient {
        let _g = rt().enter();
        AsyncClient::new(cfg)
    }
}

impl ServerApi for AsyncServer {
    fn start(&self) -> SocketAddr {
        AsyncServer::start(self).expect("start")
    }
    fn install_routes(&self) {
        self.route_async(&ECHO, |c: ClientInfo, m: Response| async move {
            tokio::task::yield_now().await; // a real await inside the handler
            c.send(echo_body(&m))
        });
        self.route_async(&HOLD, |_c: ClientInfo, _m: Response| async {});
    }
    fn connects(&self) -> Receiver<ClientInfo> {
        let (tx, rx) = channel();
        let f = forward(tx);
        self.on_connect(move |c: &ClientInfo| f(c.clone()));
        rx
    }
    fn send_and_wait(&self, req: Request, c: &ClientInfo, t: Duration) -> veltix::Result<Response> {
        rt().block_on(AsyncServer::send_and_wait(self, req, c, t))
    }
    fn ping(&self, c: &ClientInfo) -> veltix::Result<Duration> {
        rt().block_on(self.ping_client(c, T))
    }
    fn broadcast(&self, req: Request, except: &[ClientInfo]) -> veltix::Result<usize> {
        rt().block_on(AsyncServer::broadcast(self, req, except))
    }
    fn close_all(&self) {
        rt().block_on(AsyncServer::close_all(self))
    }
    fn restart(&self) -> SocketAddr {
        rt().block_on(AsyncServer::restart(self)).expect("restart")
    }
}

impl ClientApi for AsyncClient {
    fn connect(&self) -> veltix::Result<()> {
        rt().block_on(AsyncClient::connect(self))
    }
    fn install(&self) -> (Receiver<Response>, Receiver<String>) {
        let tx = self.as_blocking().sender();
        self.route_async(&ECHO, move |m: Response| {
            let tx = tx.clone();
            async move { tx.send(echo_body(&m)) }
        });
        let (ntx, nrx) = channel();
        let f = forward(ntx);
        self.route(&NOTE, move |m: Response| f(m));
        let (etx, erx) = channel();
        let f1 = forward(etx.clone());
        self.on_connect(move || f1("connect".to_string()));
        let f2 = forward(etx);
        self.on_disconnect(move |s| f2(format!("disconnect {} {}", s.permanent, s.attempt)));
        (nrx, erx)
    }
    fn send(&self, req: Request) -> veltix::Result<()> {
        rt().block_on(AsyncClient::send(self, req))
    }
    fn send_and_wait(&self, req: Request, t: Duration) -> veltix::Result<Response> {
        rt().block_on(AsyncClient::send_and_wait(self, req, t))
    }
    fn ping(&self) -> veltix::Result<Duration> {
        rt().block_on(AsyncClient::ping(self, T))
    }
    fn disconnect(&self) {
        rt().block_on(AsyncClient::disconnect(self))
    }
}

fn setup<F: Face>(cfg: ServerConfig) -> (F::S, SocketAddr, Receiver<ClientInfo>) {
    let s = F::server(cfg);
    s.install_routes();
    let connects = s.connects();
    let addr = s.start();
    (s, addr, connects)
}

fn local_client<F: Face>(addr: SocketAddr) -> F::C {
    F::client(ClientConfig {
        max_message_size: 32 * 1024 * 1024,
        ..ClientConfig::new("127.0.0.1", addr.port())
    })
}

// ---------------------------------------------------------------- scenarios

fn scenario_request_reply<F: Face>() {
    let (s, addr, connects) = setup::<F>(ServerConfig {
        max_message_size: 32 * 1024 * 1024,
        ..ServerConfig::local()
    });
    let c = local_client::<F>(addr);
    let (notes, events) = c.install();
    c.connect().unwrap();
    assert_eq!(recv(&events), "connect");
    let info = recv(&connects);
    // Client -> server, several payload kinds.
    for body in [
        b"text".to_vec(),
        Vec::new(),
        (0..=255).collect(),
        vec![7u8; 3 * 1024 * 1024],
    ] {
        let r = c
            .send_and_wait(Request::new(&ECHO, body.clone()), T)
            .unwrap();
        assert_eq!(&r.content()[..5], b"echo:");
        assert!(r.content()[5..] == body[..]);
    }
    // Server -> client.
    let r = s
        .send_and_wait(Request::text(&ECHO, "q"), &info, T)
        .unwrap();
    assert_eq!(r.text().unwrap(), "echo:q");
    // Ping both ways.
    assert!(c.ping().is_ok());
    assert!(s.ping(&info).is_ok());
    // Unsolicited messages arrive in order.
    for i in 0..500 {
        info.send(Request::text(&NOTE, &i.to_string())).unwrap();
    }
    for i in 0..500 {
        assert_eq!(recv(&notes).text().unwrap(), i.to_string());
    }
    c.disconnect();
    assert_eq!(recv(&events), "disconnect true 0");
    s.close_all();
}

fn scenario_waits_fail_fast_on_disconnect<F: Face>() {
    let (s, addr, connects) = setup::<F>(ServerConfig::local());
    let c = std::sync::Arc::new(local_client::<F>(addr));
    let (_notes, _events) = c.install();
    c.connect().unwrap();
    let info = recv(&connects);
    let c2 = c.clone();
    let t0 = Instant::now();
    let waiter = std::thread::spawn(move || {
        c2.send_and_wait(Request::text(&HOLD, "never"), Duration::from_secs(60))
    });
    // The HOLD request reached the server (so the wait is registered); then drop the link.
    let probe = s.send_and_wait(Request::text(&ECHO, "sync"), &info, T);
    assert!(probe.is_ok());
    s.close_all();
    let r = waiter.join().unwrap();
    assert!(
        matches!(r, Err(Error::Disconnected) | Err(Error::NotConnected)),
        "{r:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(30));
    assert!(matches!(
        c.send(Request::text(&NOTE, "x")),
        Err(Error::NotConnected)
    ));
}

fn scenario_broadcast_except<F: Face>() {
    let (s, addr, connects) = setup::<F>(ServerConfig::local());
    let clients: Vec<F::C> = (0..3).map(|_| local_client::<F>(addr)).collect();
    let mut notes = Vec::new();
    let mut infos = Vec::new();
    for c in &clients {
        notes.push(c.install().0);
        c.connect().unwrap();
        infos.push(recv(&connects));
    }
    assert_eq!(s.broadcast(Request::text(&NOTE, "all"), &[]).unwrap(), 3);
    for n in &notes {
        assert_eq!(recv(n).text().unwrap(), "all");
    }
    let except = [infos[0].clone()];
    assert_eq!(
        s.broadcast(Request::text(&NOTE, "most"), &except).unwrap(),
        2
    );
    // Order per connection: a later "all" proves client 0 got no "most".
    assert_eq!(s.broadcast(Request::text(&NOTE, "end"), &[]).unwrap(), 3);
    for (i, n) in notes.iter().enumerate() {
        if i != 0 {
            assert_eq!(recv(n).text().unwrap(), "most");
        }
        assert_eq!(recv(n).text().unwrap(), "end");
    }
}

fn scenario_connect_errors<F: Face>() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = F::client(ClientConfig::new("127.0.0.1", port));
    assert!(matches!(c.connect(), Err(Error::ConnectionRefused { .. })));
    let (_s, addr, _connects) = setup::<F>(ServerConfig {
        max_connections: Some(1),
        ..ServerConfig::local()
    });
    let a = local_client::<F>(addr);
    a.connect().unwrap();
    let b = local_client::<F>(addr);
    assert!(matches!(b.connect(), Err(Error::ServerFull(_))));
}

fn scenario_restart_and_reconnect<F: Face>() {
    let (s, addr, connects) = setup::<F>(ServerConfig::local());
    let c = F::client(ClientConfig {
        reconnect: ReconnectPolicy::exponential(
            100,
            Duration::from_millis(10),
            Duration::from_millis(100),
        ),
        ..ClientConfig::new("127.0.0.1", addr.port())
    });
    let (_notes, events) = c.install();
    c.connect().unwrap();
    assert_eq!(recv(&events), "connect");
    recv(&connects);
    assert_eq!(s.restart(), addr);
    assert_eq!(recv(&events), "disconnect false 0");
    loop {
        let e = recv(&events);
        if e == "connect" {
            break;
        }
        assert!(e.starts_with("disconnect false"), "{e}");
    }
    assert_eq!(
        c.send_and_wait(Request::text(&ECHO, "back"), T)
            .unwrap()
            .text()
            .unwrap(),
        "echo:back"
    );
}

macro_rules! both_faces {
    ($($name:ident),* $(,)?) => {
        mod blocking_face {
            use super::*;
            $( #[test] fn $name() { super::$name::<Blocking>(); } )*
        }
        mod async_face {
            use super::*;
            $( #[test] fn $name() { super::$name::<Async>(); } )*
        }
    };
}

both_faces!(
    scenario_request_reply,
    scenario_waits_fail_fast_on_disconnect,
    scenario_broadcast_except,
    scenario_connect_errors,
    scenario_restart_and_reconnect,
);

// ---------------------------------------------------------------- async only

#[test]
fn dropping_a_send_and_wait_future_releases_its_id() {
    let (_s, addr, _connects) = setup::<Async>(ServerConfig::local());
    let c = local_client::<Async>(addr);
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
    let ac = local_client::<Async>(addr);
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
    let bc = local_client::<Blocking>(addr2);
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

//! The two faces behind one interface: [`ServerApi`] and [`ClientApi`] are what the scenarios
//! may do with a server or a client, [`Face`] makes them. [`Blocking`] is `Server`/`Client`;
//! [`Async`] is `AsyncServer`/`AsyncClient` on a tokio runtime, every handler an async one with a
//! real `.await` in it, every future driven to completion by the test thread.

use std::net::SocketAddr;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::runtime::Runtime;
use veltix::{
    AsyncClient, AsyncServer, Client, ClientConfig, ClientInfo, ClientSender, DisconnectState,
    HandlerResult, MessageType, Request, Response, Server, ServerConfig, ServerSender,
};

/// Deadline of every wait on an event.
pub const T: Duration = Duration::from_secs(10);

/// What the scenarios do with a server, whichever face provides it. Handlers are plain closures;
/// the async face wraps each in an async handler.
pub trait ServerApi: Send + Sync + 'static {
    /// Binds (port 0 in every scenario) and starts; panics on failure.
    fn start(&self) -> SocketAddr;
    fn is_running(&self) -> bool;
    fn is_full(&self) -> bool;
    fn close_all(&self);
    /// `close_all` then `start` on the same address; panics on failure.
    fn restart(&self) -> SocketAddr;
    fn wait_until_closed(&self);

    fn route<H, R>(&self, t: &MessageType, h: H)
    where
        H: Fn(&ClientInfo, Response) -> R + Send + Sync + 'static,
        R: HandlerResult + Send + 'static;
    fn on_recv<H>(&self, h: H)
    where
        H: Fn(&ClientInfo, Response) + Send + Sync + 'static;
    fn on_connect(&self, f: impl Fn(&ClientInfo) + Send + Sync + 'static);
    fn on_disconnect(&self, f: impl Fn(&ClientInfo) + Send + Sync + 'static);

    fn send(&self, req: Request, c: &ClientInfo) -> veltix::Result<()>;
    fn broadcast(&self, req: Request, except: &[ClientInfo]) -> veltix::Result<usize>;
    fn send_and_wait(&self, req: Request, c: &ClientInfo, t: Duration) -> veltix::Result<Response>;
    fn ping(&self, c: &ClientInfo) -> veltix::Result<Duration>;
    /// Three PINGs to `c` in flight at once, without blocking on any one of them (blocking face:
    /// `ping_client_async` callbacks; async face: three `ping_client` futures joined).
    fn three_pings_at_once(&self, c: &ClientInfo) -> Vec<veltix::Result<Duration>>;
    fn sender(&self) -> ServerSender;
    fn clients(&self) -> Vec<ClientInfo>;
    fn get_clients_by_tag(&self, name: &str, value: Option<&serde_json::Value>) -> Vec<ClientInfo>;
    fn close_client(&self, c: &ClientInfo) -> bool;
}

/// What the scenarios do with a client.
pub trait ClientApi: Send + Sync + 'static {
    fn connect(&self) -> veltix::Result<()>;
    fn is_connected(&self) -> bool;
    fn disconnect(&self);
    fn retry(&self, max: Option<u32>);
    fn stop_retry(&self);
    fn wait_until_closed(&self);

    fn route<H, R>(&self, t: &MessageType, h: H)
    where
        H: Fn(Response) -> R + Send + Sync + 'static,
        R: HandlerResult + Send + 'static;
    fn on_recv<H>(&self, h: H)
    where
        H: Fn(Response) + Send + Sync + 'static;
    fn on_connect(&self, f: impl Fn() + Send + Sync + 'static);
    fn on_disconnect(&self, f: impl Fn(&DisconnectState) + Send + Sync + 'static);

    fn send(&self, req: Request) -> veltix::Result<()>;
    fn send_and_wait(&self, req: Request, t: Duration) -> veltix::Result<Response>;
    fn ping(&self) -> veltix::Result<Duration>;
    /// A handle for replying from inside handlers.
    fn sender(&self) -> ClientSender;
}

/// Makes servers and clients of one face.
pub trait Face {
    type S: ServerApi;
    type C: ClientApi;
    fn server(cfg: ServerConfig) -> Self::S;
    fn client(cfg: ClientConfig) -> Self::C;
}

// ------------------------------------------------------------------------------ blocking face

/// `Server` and `Client`.
pub struct Blocking;

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
    fn is_running(&self) -> bool {
        Server::is_running(self)
    }
    fn is_full(&self) -> bool {
        Server::is_full(self)
    }
    fn close_all(&self) {
        Server::close_all(self)
    }
    fn restart(&self) -> SocketAddr {
        Server::restart(self).expect("restart")
    }
    fn wait_until_closed(&self) {
        Server::wait_until_closed(self)
    }
    fn route<H, R>(&self, t: &MessageType, h: H)
    where
        H: Fn(&ClientInfo, Response) -> R + Send + Sync + 'static,
        R: HandlerResult + Send + 'static,
    {
        Server::route(self, t, h);
    }
    fn on_recv<H>(&self, h: H)
    where
        H: Fn(&ClientInfo, Response) + Send + Sync + 'static,
    {
        Server::on_recv(self, h);
    }
    fn on_connect(&self, f: impl Fn(&ClientInfo) + Send + Sync + 'static) {
        Server::on_connect(self, f);
    }
    fn on_disconnect(&self, f: impl Fn(&ClientInfo) + Send + Sync + 'static) {
        Server::on_disconnect(self, f);
    }
    fn send(&self, req: Request, c: &ClientInfo) -> veltix::Result<()> {
        Server::send(self, req, c)
    }
    fn broadcast(&self, req: Request, except: &[ClientInfo]) -> veltix::Result<usize> {
        Server::broadcast(self, req, except)
    }
    fn send_and_wait(&self, req: Request, c: &ClientInfo, t: Duration) -> veltix::Result<Response> {
        Server::send_and_wait(self, req, c, t)
    }
    fn ping(&self, c: &ClientInfo) -> veltix::Result<Duration> {
        self.ping_client(c, T)
    }
    fn three_pings_at_once(&self, c: &ClientInfo) -> Vec<veltix::Result<Duration>> {
        let (tx, rx) = channel();
        for _ in 0..3 {
            let tx = tx.clone();
            self.ping_client_async(
                c,
                move |r| {
                    let _ = tx.send(r);
                },
                T,
            );
        }
        (0..3).map(|_| recv(&rx)).collect()
    }
    fn sender(&self) -> ServerSender {
        Server::sender(self)
    }
    fn clients(&self) -> Vec<ClientInfo> {
        Server::clients(self)
    }
    fn get_clients_by_tag(&self, name: &str, value: Option<&serde_json::Value>) -> Vec<ClientInfo> {
        Server::get_clients_by_tag(self, name, value)
    }
    fn close_client(&self, c: &ClientInfo) -> bool {
        Server::close_client(self, c)
    }
}

impl ClientApi for Client {
    fn connect(&self) -> veltix::Result<()> {
        Client::connect(self)
    }
    fn is_connected(&self) -> bool {
        Client::is_connected(self)
    }
    fn disconnect(&self) {
        Client::disconnect(self)
    }
    fn retry(&self, max: Option<u32>) {
        Client::retry(self, max)
    }
    fn stop_retry(&self) {
        Client::stop_retry(self)
    }
    fn wait_until_closed(&self) {
        Client::wait_until_closed(self)
    }
    fn route<H, R>(&self, t: &MessageType, h: H)
    where
        H: Fn(Response) -> R + Send + Sync + 'static,
        R: HandlerResult + Send + 'static,
    {
        Client::route(self, t, h);
    }
    fn on_recv<H>(&self, h: H)
    where
        H: Fn(Response) + Send + Sync + 'static,
    {
        Client::on_recv(self, h);
    }
    fn on_connect(&self, f: impl Fn() + Send + Sync + 'static) {
        Client::on_connect(self, f);
    }
    fn on_disconnect(&self, f: impl Fn(&DisconnectState) + Send + Sync + 'static) {
        Client::on_disconnect(self, f);
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
    fn sender(&self) -> ClientSender {
        Client::sender(self)
    }
}

// --------------------------------------------------------------------------------- async face

/// The tokio runtime the async face's servers and clients live on (created inside it).
pub fn rt() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime")
    })
}

/// `AsyncServer` and `AsyncClient`.
pub struct Async;

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
    fn is_running(&self) -> bool {
        AsyncServer::is_running(self)
    }
    fn is_full(&self) -> bool {
        AsyncServer::is_full(self)
    }
    fn close_all(&self) {
        rt().block_on(AsyncServer::close_all(self))
    }
    fn restart(&self) -> SocketAddr {
        rt().block_on(AsyncServer::restart(self)).expect("restart")
    }
    fn wait_until_closed(&self) {
        rt().block_on(AsyncServer::wait_until_closed(self))
    }
    fn route<H, R>(&self, t: &MessageType, h: H)
    where
        H: Fn(&ClientInfo, Response) -> R + Send + Sync + 'static,
        R: HandlerResult + Send + 'static,
    {
        let h = Arc::new(h);
        self.route_async(t, move |c: ClientInfo, m: Response| {
            let h = h.clone();
            async move {
                tokio::task::yield_now().await; // a real await inside the handler
                h(&c, m)
            }
        });
    }
    fn on_recv<H>(&self, h: H)
    where
        H: Fn(&ClientInfo, Response) + Send + Sync + 'static,
    {
        AsyncServer::on_recv(self, h);
    }
    fn on_connect(&self, f: impl Fn(&ClientInfo) + Send + Sync + 'static) {
        AsyncServer::on_connect(self, f);
    }
    fn on_disconnect(&self, f: impl Fn(&ClientInfo) + Send + Sync + 'static) {
        AsyncServer::on_disconnect(self, f);
    }
    fn send(&self, req: Request, c: &ClientInfo) -> veltix::Result<()> {
        rt().block_on(AsyncServer::send(self, req, c))
    }
    fn broadcast(&self, req: Request, except: &[ClientInfo]) -> veltix::Result<usize> {
        rt().block_on(AsyncServer::broadcast(self, req, except))
    }
    fn send_and_wait(&self, req: Request, c: &ClientInfo, t: Duration) -> veltix::Result<Response> {
        rt().block_on(AsyncServer::send_and_wait(self, req, c, t))
    }
    fn ping(&self, c: &ClientInfo) -> veltix::Result<Duration> {
        rt().block_on(self.ping_client(c, T))
    }
    fn three_pings_at_once(&self, c: &ClientInfo) -> Vec<veltix::Result<Duration>> {
        rt().block_on(async {
            let (a, b, d) = tokio::join!(
                self.ping_client(c, T),
                self.ping_client(c, T),
                self.ping_client(c, T)
            );
            vec![a, b, d]
        })
    }
    fn sender(&self) -> ServerSender {
        AsyncServer::sender(self)
    }
    fn clients(&self) -> Vec<ClientInfo> {
        AsyncServer::clients(self)
    }
    fn get_clients_by_tag(&self, name: &str, value: Option<&serde_json::Value>) -> Vec<ClientInfo> {
        AsyncServer::get_clients_by_tag(self, name, value)
    }
    fn close_client(&self, c: &ClientInfo) -> bool {
        AsyncServer::close_client(self, c)
    }
}

impl ClientApi for AsyncClient {
    fn connect(&self) -> veltix::Result<()> {
        rt().block_on(AsyncClient::connect(self))
    }
    fn is_connected(&self) -> bool {
        AsyncClient::is_connected(self)
    }
    fn disconnect(&self) {
        rt().block_on(AsyncClient::disconnect(self))
    }
    fn retry(&self, max: Option<u32>) {
        AsyncClient::retry(self, max)
    }
    fn stop_retry(&self) {
        AsyncClient::stop_retry(self)
    }
    fn wait_until_closed(&self) {
        rt().block_on(AsyncClient::wait_until_closed(self))
    }
    fn route<H, R>(&self, t: &MessageType, h: H)
    where
        H: Fn(Response) -> R + Send + Sync + 'static,
        R: HandlerResult + Send + 'static,
    {
        let h = Arc::new(h);
        self.route_async(t, move |m: Response| {
            let h = h.clone();
            async move {
                tokio::task::yield_now().await; // a real await inside the handler
                h(m)
            }
        });
    }
    fn on_recv<H>(&self, h: H)
    where
        H: Fn(Response) + Send + Sync + 'static,
    {
        AsyncClient::on_recv(self, h);
    }
    fn on_connect(&self, f: impl Fn() + Send + Sync + 'static) {
        AsyncClient::on_connect(self, f);
    }
    fn on_disconnect(&self, f: impl Fn(&DisconnectState) + Send + Sync + 'static) {
        AsyncClient::on_disconnect(self, f);
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
    fn sender(&self) -> ClientSender {
        AsyncClient::sender(self)
    }
}

// ------------------------------------------------------------------------- shared test helpers

/// User message types of the scenarios.
pub const ECHO: MessageType = MessageType::new(200, "echo");
pub const NOTE: MessageType = MessageType::new(201, "note");
pub const HOLD: MessageType = MessageType::new(202, "hold");

/// The next event, waiting at most [`T`].
pub fn recv<V>(rx: &Receiver<V>) -> V {
    rx.recv_timeout(T).expect("event did not arrive in time")
}

/// A callback that forwards its argument to `tx` (usable from any thread).
pub fn forward<V: Send + 'static>(tx: Sender<V>) -> impl Fn(V) + Send + Sync + 'static {
    let tx = Mutex::new(tx);
    move |v| {
        let _ = tx.lock().unwrap().send(v);
    }
}

/// The answer to an ECHO request: `"echo:" + content` (the prefix proves a handler made it).
pub fn echo_body(m: &Response) -> Request {
    let mut body = b"echo:".to_vec();
    body.extend_from_slice(m.content());
    Request::new(m.message_type(), body).respond(m)
}

/// A server whose ECHO requests are answered with `"echo:" + content` and whose HOLD requests
/// never are, started on port 0; with the channel of its connecting clients.
pub fn setup<F: Face>(cfg: ServerConfig) -> (F::S, SocketAddr, Receiver<ClientInfo>) {
    let s = F::server(cfg);
    s.route(&ECHO, |c: &ClientInfo, m: Response| c.send(echo_body(&m)));
    s.route(&HOLD, |_c: &ClientInfo, _m: Response| {});
    let connects = connects(&s);
    let addr = s.start();
    (s, addr, connects)
}

/// The clients connecting to `s` from now on.
pub fn connects<S: ServerApi>(s: &S) -> Receiver<ClientInfo> {
    let (tx, rx) = channel();
    let f = forward(tx);
    s.on_connect(move |c: &ClientInfo| f(c.clone()));
    rx
}

/// The clients of `s` whose `on_disconnect` ran, from now on.
pub fn disconnects<S: ServerApi>(s: &S) -> Receiver<ClientInfo> {
    let (tx, rx) = channel();
    let f = forward(tx);
    s.on_disconnect(move |c: &ClientInfo| f(c.clone()));
    rx
}

/// A client of `127.0.0.1:port` (default config, not connected).
pub fn client<F: Face>(addr: SocketAddr) -> F::C {
    F::client(ClientConfig::new("127.0.0.1", addr.port()))
}

/// A connected client of `addr`.
pub fn connected<F: Face>(addr: SocketAddr) -> F::C {
    let c = client::<F>(addr);
    c.connect().expect("connect");
    c
}

/// Makes `c` answer ECHO requests from the server with `"echo:" + content`.
pub fn answer_echo<C: ClientApi>(c: &C) {
    let tx = c.sender();
    c.route(&ECHO, move |m: Response| tx.send(echo_body(&m)));
}

/// The contents of the NOTE messages `c` receives, in order.
pub fn notes<C: ClientApi>(c: &C) -> Receiver<String> {
    let (tx, rx) = channel();
    let f = forward(tx);
    c.route(&NOTE, move |m: Response| f(m.text().unwrap().to_string()));
    rx
}

/// `c`'s connects and disconnects, as `"connect"` and
/// `"disconnect {permanent} {attempt} {reason:?}"`.
pub fn events<C: ClientApi>(c: &C) -> Receiver<String> {
    let (tx, rx) = channel();
    events_to(c, tx);
    rx
}

/// [`events`], sent to `tx`.
pub fn events_to<C: ClientApi>(c: &C, tx: Sender<String>) {
    let f1 = forward(tx.clone());
    c.on_connect(move || f1("connect".to_string()));
    let f2 = forward(tx);
    c.on_disconnect(move |s| {
        f2(format!(
            "disconnect {} {} {:?}",
            s.permanent, s.attempt, s.reason
        ))
    });
}

/// The content of an ECHO reply after its `"echo:"` prefix (which is checked).
pub fn echoed(r: veltix::Result<Response>) -> Vec<u8> {
    let r = r.expect("echo reply");
    assert_eq!(&r.content()[..5], b"echo:", "not an echo reply");
    r.content()[5..].to_vec()
}

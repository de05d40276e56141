//! `veltix demo`: a server and a few clients talking on loopback, in one process, narrated.
//!
//! The server has three routes: `join` (200) tags the client with its name and welcomes it,
//! `echo` (201) answers with the same content, `chat` (202) broadcasts `name: text` to the
//! other clients. Every client joins, sends `--messages` echoes with `send_and_wait`, says hello
//! to the others, and pings the server `--messages` times. The last line is a summary.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use veltix::{
    Client, ClientConfig, ClientInfo, MessageType, Request, Response, Server, ServerConfig,
};

use crate::ping::{ms, percentile};

const JOIN: MessageType = MessageType::new(200, "join");
const ECHO: MessageType = MessageType::new(201, "echo");
const CHAT: MessageType = MessageType::new(202, "chat");

/// Deadline of every wait in the demo (it normally takes milliseconds).
const TIMEOUT: Duration = Duration::from_secs(5);

const NAMES: [&str; 12] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj",
];

/// Arguments of `veltix demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Number of clients.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub clients: u32,
    /// Echo requests and pings per client.
    #[arg(long, value_name = "M", default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub messages: u32,
}

fn name_of(i: usize) -> String {
    NAMES
        .get(i)
        .map_or_else(|| format!("client{}", i + 1), |n| n.to_string())
}

fn tag_name(client: &ClientInfo) -> String {
    client
        .get_tag("name")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| client.addr().to_string())
}

/// The demo server: join, echo and chat routes, on a free loopback port.
fn start_server() -> veltix::Result<Server> {
    let server = Server::new(ServerConfig::local().max_workers(2));
    server.route(&JOIN, |client: &ClientInfo, msg: Response| {
        let name = msg.text().unwrap_or("anonymous").to_owned();
        client.set_tag("name", name.as_str());
        client.send(Request::text(&JOIN, &format!("welcome, {name}")).respond(&msg))
    });
    server.route(&ECHO, |client: &ClientInfo, msg: Response| {
        client.send(Request::new(&ECHO, msg.content().clone()).respond(&msg))
    });
    let tx = server.sender();
    server.route(&CHAT, move |client: &ClientInfo, msg: Response| {
        let line = format!("{}: {}", tag_name(client), msg.text()?);
        tx.broadcast(Request::text(&CHAT, &line), std::slice::from_ref(client))
            .map(|_| ())
    });
    server.start()?;
    Ok(server)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(v, 50.0)
}

/// Runs `veltix demo`.
pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let n = args.clients as usize;
    let m = args.messages;
    let server = start_server()?;
    let addr = server
        .local_addr()
        .ok_or("the demo server stopped unexpectedly")?;
    println!("veltix demo: 1 server and {n} client(s) on loopback, wire gen3");
    println!(
        "{:<8} listening on {addr}; routes: join={}, echo={}, chat={}",
        "server",
        JOIN.code(),
        ECHO.code(),
        CHAT.code()
    );

    // Connect and join. Every chat line a client receives goes to `heard`.
    let (heard_tx, heard) = mpsc::channel::<(usize, String)>();
    let mut clients = Vec::with_capacity(n);
    let mut messages = 0u64;
    for i in 0..n {
        let name = name_of(i);
        let client = Client::new(ClientConfig::new("127.0.0.1", addr.port()).max_workers(1));
        let tx = heard_tx.clone();
        client.route(&CHAT, move |msg: Response| {
            let _ = tx.send((i, msg.text().unwrap_or("<not text>").to_owned()));
        });
        client.connect()?;
        let welcome = client.send_and_wait(Request::text(&JOIN, &name), TIMEOUT)?;
        messages += 2;
        println!(
            "{name:<8} connected and joined; server says \"{}\"",
            welcome.text()?
        );
        clients.push((name, client));
    }
    let mut tagged: Vec<String> = server
        .get_clients_by_tag("name", None)
        .iter()
        .map(tag_name)
        .collect();
    tagged.sort();
    println!(
        "{:<8} knows {} tagged client(s): {}",
        "server",
        tagged.len(),
        tagged.join(", ")
    );

    // Echoes (request/response) and pings, per client.
    let (mut echo_rtts, mut ping_rtts) = (Vec::new(), Vec::new());
    for (name, client) in &clients {
        let (mut echo, mut ping) = (Vec::new(), Vec::new());
        for k in 1..=m {
            let text = format!("{name} #{k}");
            let start = Instant::now();
            let reply = client.send_and_wait(Request::text(&ECHO, &text), TIMEOUT)?;
            echo.push(ms(start.elapsed()));
            if reply.content() != text.as_bytes() {
                return Err(format!(
                    "{name}: echo of {text:?} came back as {:?}",
                    reply.content()
                )
                .into());
            }
            ping.push(ms(client.ping_server(TIMEOUT)?));
            messages += 4;
        }
        if m > 0 {
            println!(
                "{name:<8} {m} echo(es) came back intact (median rtt {:.3} ms); {m} ping(s) (median rtt {:.3} ms)",
                median(&mut echo),
                median(&mut ping)
            );
        }
        echo_rtts.extend(echo);
        ping_rtts.extend(ping);
    }

    // Chat: each client's hello reaches every other client.
    for (i, (name, client)) in clients.iter().enumerate() {
        let hello = format!("hello from {name}");
        let expected = format!("{name}: {hello}");
        client.send(Request::text(&CHAT, &hello))?;
        messages += 1;
        let mut got = Vec::with_capacity(n - 1);
        let deadline = Instant::now() + TIMEOUT;
        while got.len() < n - 1 {
            let left = deadline.saturating_duration_since(Instant::now());
            match heard.recv_timeout(left) {
                Ok((who, line)) => {
                    if who == i || line != expected {
                        let to = &clients[who].0;
                        return Err(format!("{to} unexpectedly received {line:?}").into());
                    }
                    got.push(who);
                    messages += 1;
                }
                Err(_) => {
                    return Err(format!(
                        "the broadcast from {name} reached {} of {} clients within {TIMEOUT:?}",
                        got.len(),
                        n - 1
                    )
                    .into())
                }
            }
        }
        got.sort_unstable();
        let who: Vec<String> = got.iter().map(|&j| clients[j].0.clone()).collect();
        if who.is_empty() {
            println!("{name:<8} says \"{hello}\" (nobody else is here to hear it)");
        } else {
            println!(
                "{name:<8} says \"{hello}\"; {} received \"{expected}\"",
                who.join(", ")
            );
        }
    }

    for (_, client) in &clients {
        client.disconnect();
    }
    server.close_all();
    println!("{:<8} closed; all clients disconnected", "server");
    let fmt_median = |v: &mut Vec<f64>| {
        if v.is_empty() {
            "n/a".to_owned()
        } else {
            format!("{:.3} ms", median(v))
        }
    };
    println!(
        "summary: {n} client(s), {messages} messages exchanged in {:.2} s; median echo rtt {}, median ping rtt {}",
        t0.elapsed().as_secs_f64(),
        fmt_median(&mut echo_rtts),
        fmt_median(&mut ping_rtts)
    );
    Ok(())
}

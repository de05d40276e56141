//! The async face: an echo server and a client in one tokio program.
//!
//! `cargo run --example async_echo -- [TEXT]` prints the echoed text and the round-trip time.

use std::time::Duration;

use veltix::{AsyncClient, AsyncServer, ClientConfig, MessageType, Request, ServerConfig};

const ECHO: MessageType = MessageType::new(200, "echo");

#[tokio::main]
async fn main() -> veltix::Result<()> {
    let text = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "hello, async".into());

    let server = AsyncServer::new(ServerConfig::local());
    // Async handlers may await; messages of one connection are still handled in order.
    server.route_async(&ECHO, |client, msg| async move {
        client.send(Request::new(&ECHO, msg.content().clone()).respond(&msg))
    });
    let addr = server.start()?;

    let client = AsyncClient::new(ClientConfig::new("127.0.0.1", addr.port()));
    client.connect().await?;
    let reply = client
        .send_and_wait(Request::text(&ECHO, &text), Duration::from_secs(5))
        .await?;
    let rtt = client.ping(Duration::from_secs(5)).await?;
    println!(
        "{} (ping {:.3} ms)",
        reply.text()?,
        rtt.as_secs_f64() * 1000.0
    );

    client.disconnect().await;
    server.close_all().await; // resolves once every connection is closed
    Ok(())
}

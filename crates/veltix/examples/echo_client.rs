//! Sends one text message to an echo server and prints the reply.
//!
//! ```text
//! cargo run -p veltix --example echo_client -- 9000 "hello"    # PORT TEXT
//! ```

use std::time::Duration;

use veltix::{Client, ClientConfig, MessageType, Request};

const ECHO: MessageType = MessageType::new(200, "echo");

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(port), Some(text)) = (args.next(), args.next()) else {
        return Err("usage: echo_client PORT TEXT".into());
    };
    let port: u16 = port
        .parse()
        .map_err(|e| format!("bad port {port:?}: {e}"))?;

    let client = Client::new(ClientConfig::new("127.0.0.1", port));
    client.connect()?;
    // Blocks until the reply carrying our request id arrives (or 5 s pass).
    let reply = client.send_and_wait(Request::text(&ECHO, &text), Duration::from_secs(5))?;
    println!("{}", reply.text()?);
    client.disconnect();
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_client: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

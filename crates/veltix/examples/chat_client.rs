//! A chat client for the `chat_server` example: joins with a name, sends every line read from
//! stdin, prints every line broadcast by the others. Ends at end of input (Ctrl-D).
//!
//! ```text
//! cargo run -p veltix --example chat_client -- 9000 alice    # PORT NAME
//! ```

use std::io::BufRead;
use std::time::Duration;

use veltix::{Client, ClientConfig, MessageType, Request, Response};

const JOIN: MessageType = MessageType::new(200, "join");
const CHAT: MessageType = MessageType::new(201, "chat");

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(port), Some(name)) = (args.next(), args.next()) else {
        return Err("usage: chat_client PORT NAME".into());
    };
    let port: u16 = port
        .parse()
        .map_err(|e| format!("bad port {port:?}: {e}"))?;

    let client = Client::new(ClientConfig::new("127.0.0.1", port));
    // Routes run on the client's handler threads, in arrival order.
    client.route(&CHAT, |msg: Response| {
        println!("{}", msg.text().unwrap_or("<not text>"))
    });
    client.connect()?;
    let welcome = client.send_and_wait(Request::text(&JOIN, &name), Duration::from_secs(5))?;
    println!("{}", welcome.text()?);

    // Fails (and ends the program) if the server goes away.
    for line in std::io::stdin().lock().lines() {
        client.send(Request::text(&CHAT, &line?))?;
    }
    client.disconnect();
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat_client: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! An echo server: every message goes back to its sender, same type, content and request id.
//!
//! ```text
//! cargo run -p veltix --example echo_server -- 9000    # PORT, default 0 = any free port
//! ```

use veltix::{Request, Server, ServerConfig};

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let port = match std::env::args().nth(1) {
        Some(p) => p.parse().map_err(|e| format!("bad port {p:?}: {e}"))?,
        None => 0,
    };
    let server = Server::new(ServerConfig::local().port(port));
    server.on_recv(|client, msg| {
        // `respond` copies the request id, so the sender's `send_and_wait` gets this reply.
        client.send(Request::new(msg.message_type(), msg.content().clone()).respond(&msg))
    });
    let addr = server.start()?;
    println!("listening on {addr}");
    server.wait_until_closed(); // serve until the process is stopped
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! A chat server: a client joins with its name (the server remembers it as a tag), then every
//! chat line it sends is broadcast as `name: line` to everyone else.
//!
//! ```text
//! cargo run -p veltix --example chat_server -- 9000    # PORT, default 0 = any free port
//! ```

use veltix::{ClientInfo, MessageType, Request, Response, Server, ServerConfig};

const JOIN: MessageType = MessageType::new(200, "join");
const CHAT: MessageType = MessageType::new(201, "chat");

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let port = match std::env::args().nth(1) {
        Some(p) => p.parse().map_err(|e| format!("bad port {p:?}: {e}"))?,
        None => 0,
    };
    let server = Server::new(ServerConfig::local().port(port));

    let tx = server.sender();
    server.route(&JOIN, move |client: &ClientInfo, msg: Response| {
        let name = msg.text()?;
        client.set_tag("name", name);
        let online = tx.clients().len();
        client
            .send(Request::text(&JOIN, &format!("welcome {name} ({online} online)")).respond(&msg))
    });

    let tx = server.sender();
    server.route(&CHAT, move |client: &ClientInfo, msg: Response| {
        let name = client
            .get_tag("name")
            .and_then(|v| v.as_str().map(String::from));
        let line = format!(
            "{}: {}",
            name.as_deref().unwrap_or("anonymous"),
            msg.text()?
        );
        // Everyone but the sender; the frame is encoded once.
        tx.broadcast(Request::text(&CHAT, &line), std::slice::from_ref(client))
            .map(|_| ())
    });

    let addr = server.start()?;
    println!("listening on {addr}");
    server.wait_until_closed();
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat_server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

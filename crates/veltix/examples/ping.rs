//! Measures round-trip times to a Veltix server with the built-in PING (any server answers it).
//!
//! ```text
//! cargo run -p veltix --example ping -- 9000 5    # PORT [COUNT, default 4]
//! ```

use std::time::Duration;

use veltix::{Client, ClientConfig};

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let Some(port) = args.next() else {
        return Err("usage: ping PORT [COUNT]".into());
    };
    let port: u16 = port
        .parse()
        .map_err(|e| format!("bad port {port:?}: {e}"))?;
    let count: u32 = match args.next() {
        Some(c) => c.parse().map_err(|e| format!("bad count {c:?}: {e}"))?,
        None => 4,
    };

    let client = Client::new(ClientConfig::new("127.0.0.1", port));
    client.connect()?;
    for seq in 1..=count {
        let rtt = client.ping_server(Duration::from_secs(2))?;
        println!("seq={seq} rtt={:.3} ms", rtt.as_secs_f64() * 1e3);
    }
    client.disconnect();
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ping: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

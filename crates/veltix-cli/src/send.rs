//! `veltix send`: sends one message, optionally waits for the reply and prints it.
//!
//! Output contract: with `--wait`, the reply's content on stdout: valid UTF-8 is printed as text
//! followed by a newline unless it already ends with one; anything else is written as raw bytes.
//! Nothing is printed without `--wait`. Errors are one line on stderr and a non-zero exit.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use tracing::info;
use veltix::{Client, ClientConfig, Generation, MessageType, Request};

use crate::serve::parse_timeout;

/// The message content: exactly one of `--text`, `--json`, `--file`.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Content {
    /// UTF-8 text.
    #[arg(long, value_name = "S")]
    pub text: Option<String>,
    /// A JSON document; validated, then sent formatted like Python's `json.dumps`.
    #[arg(long, value_name = "J")]
    pub json: Option<String>,
    /// The raw bytes of a file.
    #[arg(long, value_name = "F")]
    pub file: Option<PathBuf>,
}

/// Arguments of `veltix send`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Server host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Server port.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Message type code (user codes are 200..=65535).
    #[arg(long = "type", value_name = "CODE")]
    pub type_code: u16,
    #[command(flatten)]
    pub content: Content,
    /// Wait for the reply (same request id) and print its content.
    #[arg(long)]
    pub wait: bool,
    /// Seconds allowed for connecting, and again for the reply.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Wire generation: gen3 (Python Veltix 2.x/3.x) or gen1 (Python Veltix 1.6.x).
    #[arg(long, value_name = "GEN", default_value = "gen3")]
    pub wire: Generation,
    #[command(flatten)]
    pub security: crate::secure::ClientArgs,
}

/// Builds the request from the arguments (validating the type code and the JSON).
fn build_request(args: &Args) -> Result<Request, Box<dyn std::error::Error>> {
    let ty = MessageType::user(args.type_code, "cli")?;
    let c = &args.content;
    if let Some(text) = &c.text {
        Ok(Request::text(&ty, text))
    } else if let Some(json) = &c.json {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("invalid JSON for --json: {e}"))?;
        Ok(Request::json(&ty, &value)?)
    } else if let Some(path) = &c.file {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Ok(Request::new(&ty, bytes))
    } else {
        Err("one of --text, --json or --file is required".into())
    }
}

/// Writes a reply's content to `out` (text with a trailing newline, or raw bytes).
fn print_content(out: &mut impl Write, content: &[u8]) -> std::io::Result<()> {
    match std::str::from_utf8(content) {
        Ok(text) if text.is_empty() || !text.ends_with('\n') => writeln!(out, "{text}"),
        _ => out.write_all(content),
    }?;
    out.flush()
}

/// Connects a one-shot client (used by `send` and `ping`): `timeout` bounds the TCP connect and
/// the handshake, and unsolicited traffic (e.g. chat broadcasts) is not ours, so it is dropped
/// without a warning.
pub(crate) fn connect_quietly(
    host: &str,
    port: u16,
    wire: veltix::Generation,
    timeout: std::time::Duration,
    security: &crate::secure::ClientArgs,
) -> veltix::Result<Client> {
    let client = Client::new(
        security.configure(
            ClientConfig::new(host, port)
                .generation(wire)
                .connect_timeout(timeout)
                .handshake_timeout(timeout),
        ),
    );
    client.on_recv(|_| ());
    client.connect()?;
    Ok(client)
}

/// Runs `veltix send`.
pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let request = build_request(&args)?;
    let client = connect_quietly(
        &args.host,
        args.port,
        args.wire,
        args.timeout,
        &args.security,
    )?;
    let result = if args.wait {
        client.send_and_wait(&request, args.timeout).map(Some)
    } else {
        client.send(&request).map(|()| None)
    };
    // Flushes what was queued, so the message is delivered before we exit.
    client.disconnect();
    if let Some(reply) = result? {
        info!(
            message_type = reply.message_type(),
            request_id = reply.request_id(),
            bytes = reply.content().len(),
            "reply"
        );
        print_content(&mut std::io::stdout().lock(), reply.content())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::print_content;

    fn printed(content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        print_content(&mut out, content).unwrap();
        out
    }

    #[test]
    fn text_gets_one_trailing_newline() {
        assert_eq!(printed(b"hi"), b"hi\n");
        assert_eq!(printed(b"hi\n"), b"hi\n");
        assert_eq!(printed(b""), b"\n");
    }

    #[test]
    fn binary_is_written_raw() {
        assert_eq!(printed(&[0xff, 0x00, 0x01]), [0xff, 0x00, 0x01]);
    }
}

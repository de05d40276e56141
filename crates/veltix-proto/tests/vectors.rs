//! Every entry of `vectors.json` (captured from the real Python Veltix 1.6.9 and 3.3.0) is a test
//! case. The file is read at run time: `../shared/reference/vectors.json` when present, else the
//! copy committed in `tests/data/`. Prints one line per vector and a closing count.

use std::path::PathBuf;

use serde_json::Value;
use veltix_proto::handshake::{ack_message, server_full_message};
use veltix_proto::{
    Decoded, Decoder, DecoderConfig, Frame, Generation, Handshake, HandshakeConfig, TypeSet,
};

fn vectors_path() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = manifest.join("../../../shared/reference/vectors.json");
    if shared.exists() {
        shared
    } else {
        manifest.join("tests/data/vectors.json")
    }
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn generation(v: &Value) -> Generation {
    match v["generation"].as_u64() {
        Some(1) => Generation::Gen1,
        Some(3) => Generation::Gen3,
        other => panic!("unknown generation {other:?}"),
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("missing string field {k}"))
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("missing integer field {k}"))
}

fn decode_all(dec: &mut Decoder) -> (Vec<Frame>, usize) {
    let mut frames = Vec::new();
    let mut rejections = 0;
    while let Some(d) = dec.decode() {
        match d {
            Decoded::Frame(f) => frames.push(f),
            Decoded::Rejected(_) => rejections += 1,
        }
    }
    (frames, rejections)
}

fn check_frame(v: &Value) -> Result<(), String> {
    let g = generation(v);
    let wire = unhex(s(v, "frame_hex"));
    let content = unhex(s(v, "content_hex"));
    let mut frame = Frame::new(u(v, "type_code") as u16, u(v, "request_id") as u32, content);
    match g {
        Generation::Gen3 => frame.flags = u(v, "flags") as u8,
        Generation::Gen1 => {
            frame.timestamp_ms = u(v, "timestamp_ms");
            let id_hex = s(v, "request_id_hex");
            if u32::from_str_radix(id_hex, 16).ok() != Some(frame.request_id) {
                return Err(format!("request_id_hex {id_hex} != request_id"));
            }
        }
    }
    let encoded = frame.encode(g).map_err(|e| e.to_string())?;
    if encoded[..] != wire[..] {
        return Err(format!(
            "encode: got {}, want {}",
            hex(&encoded),
            hex(&wire)
        ));
    }
    if wire.len() as u64 != u(v, "frame_len") {
        return Err("frame_len mismatch".into());
    }
    let crc = u32::from_str_radix(s(v, "crc32_hex"), 16).map_err(|e| e.to_string())?;
    if crc32fast::hash(&frame.content) != crc {
        return Err("crc32_hex mismatch".into());
    }
    // Decode it whole and one byte at a time.
    for chunk in [wire.len(), 1] {
        let mut dec = Decoder::new(DecoderConfig::new(g));
        for piece in wire.chunks(chunk) {
            dec.feed(piece);
        }
        let (frames, rejections) = decode_all(&mut dec);
        if frames != vec![frame.clone()] || rejections != 0 || dec.buffered() != 0 {
            return Err(format!(
                "decode (chunk {chunk}): {frames:?}, {rejections} rejections"
            ));
        }
    }
    Ok(())
}

fn check_handshake(v: &Value) -> Result<(), String> {
    let g = generation(v);
    let bytes = unhex(s(v, "bytes_hex"));
    let name = s(v, "name");
    match g {
        Generation::Gen3 => {
            if u(v, "length_prefix") as usize != bytes.len() - 2 {
                return Err("length_prefix mismatch".into());
            }
            if s(v, "json_text").as_bytes() != &bytes[2..] {
                return Err("json_text mismatch".into());
            }
            let cfg = HandshakeConfig::new(g);
            let ours = match name {
                "server_hello" => Handshake::server(cfg.clone())
                    .unwrap()
                    .poll_transmit()
                    .unwrap_or_default(),
                "client_hello" => {
                    // A client emits its hello after reading the server's.
                    let mut c = Handshake::client(cfg.clone()).unwrap();
                    let mut srv = Handshake::server(cfg.clone()).unwrap();
                    let hello = srv.poll_transmit().unwrap_or_default();
                    c.feed(&hello).map_err(|e| e.to_string())?;
                    c.poll_transmit().unwrap_or_default()
                }
                "server_ack" => ack_message(),
                "server_reject_full" => server_full_message(),
                other => return Err(format!("unknown handshake vector {other}")),
            };
            if ours[..] != bytes[..] {
                return Err(format!("got {}, want {}", hex(&ours), hex(&bytes)));
            }
            // And the receiving side accepts it.
            match name {
                "server_hello" => {
                    let mut c = Handshake::client(cfg).unwrap();
                    let used = c.feed(&bytes).map_err(|e| e.to_string())?;
                    if used != bytes.len() || c.poll_transmit().is_none() {
                        return Err("client did not answer the hello".into());
                    }
                }
                "client_hello" => {
                    let mut srv = Handshake::server(cfg).unwrap();
                    srv.poll_transmit();
                    srv.feed(&bytes).map_err(|e| e.to_string())?;
                    if srv.poll_transmit().as_deref() != Some(&ack_message()[..]) || !srv.is_done()
                    {
                        return Err("server did not ack".into());
                    }
                }
                "server_reject_full" => {
                    let mut c = Handshake::client(cfg).unwrap();
                    match c.feed(&bytes) {
                        Err(veltix_proto::HandshakeError::ServerFull(r)) if r == "server_full" => {}
                        other => return Err(format!("expected ServerFull, got {other:?}")),
                    }
                }
                _ => {}
            }
        }
        Generation::Gen1 => {
            let parsed = veltix_proto::Header::parse(g, &bytes).ok_or("short frame")?;
            let mut cfg = HandshakeConfig::new(g);
            cfg.timestamp_ms = parsed.timestamp_ms;
            match name {
                "server_hello_frame" => {
                    cfg.hello_id = Some(parsed.request_id);
                    let ours = Handshake::server(cfg.clone())
                        .unwrap()
                        .poll_transmit()
                        .unwrap_or_default();
                    if ours[..] != bytes[..] {
                        return Err(format!("got {}, want {}", hex(&ours), hex(&bytes)));
                    }
                    let mut c = Handshake::client(cfg).unwrap();
                    c.feed(&bytes).map_err(|e| e.to_string())?;
                    if c.peer_version() != Some("1.6.9") || c.poll_transmit().is_none() {
                        return Err("client did not accept the HELLO".into());
                    }
                }
                "client_hello_ack_frame" => {
                    // Rebuild the HELLO this ACK answers (same id), let our client answer it.
                    let mut hello = bytes.clone();
                    hello[1] = 10;
                    let mut c = Handshake::client(cfg.clone()).unwrap();
                    c.feed(&hello).map_err(|e| e.to_string())?;
                    let ours = c.poll_transmit().unwrap_or_default();
                    if ours[..] != bytes[..] {
                        return Err(format!("got {}, want {}", hex(&ours), hex(&bytes)));
                    }
                    let mut srv_cfg = cfg;
                    srv_cfg.hello_id = Some(parsed.request_id);
                    let mut srv = Handshake::server(srv_cfg).unwrap();
                    srv.poll_transmit();
                    srv.feed(&bytes).map_err(|e| e.to_string())?;
                    if !srv.is_done() {
                        return Err("server did not accept the ACK".into());
                    }
                }
                other => return Err(format!("unknown handshake vector {other}")),
            }
        }
    }
    Ok(())
}

fn check_buffer_case(v: &Value) -> Result<(), String> {
    let g = generation(v);
    let input = unhex(s(v, "input_hex"));
    let known: TypeSet = v["registered_type_codes"]
        .as_array()
        .ok_or("registered_type_codes")?
        .iter()
        .map(|c| c.as_u64().unwrap_or(0) as u16)
        .collect();
    let cfg = DecoderConfig {
        generation: g,
        max_message_size: u(v, "max_message_size") as usize,
        known_types: Some(known),
    };
    let mut dec = Decoder::new(cfg);
    dec.feed(&input);
    let (frames, _) = decode_all(&mut dec);
    let expected = v["expected_messages"]
        .as_array()
        .ok_or("expected_messages")?;
    if frames.len() != expected.len() {
        return Err(format!(
            "got {} frames, want {}: {frames:?}",
            frames.len(),
            expected.len()
        ));
    }
    for (f, e) in frames.iter().zip(expected) {
        let id = match g {
            Generation::Gen3 => u(e, "request_id") as u32,
            Generation::Gen1 => {
                u32::from_str_radix(s(e, "request_id_hex"), 16).map_err(|e| e.to_string())?
            }
        };
        if u64::from(f.message_type) != u(e, "type_code")
            || f.request_id != id
            || hex(&f.content) != s(e, "content_hex")
        {
            return Err(format!("frame {f:?} != expected {e}"));
        }
        if g == Generation::Gen1 && f.timestamp_ms != u(e, "timestamp_ms") {
            return Err("timestamp mismatch".into());
        }
    }
    let remaining = u(v, "expected_remaining_bytes") as usize;
    if dec.buffered() != remaining {
        return Err(format!("remaining {} != {remaining}", dec.buffered()));
    }
    Ok(())
}

/// Replays one direction of a captured session: handshake machine first, then the decoder on
/// the leftover bytes. Every frame must decode without rejection and re-encode to the same bytes.
fn replay(g: Generation, bytes: &[u8], mut hs: Handshake) -> Result<Vec<Frame>, String> {
    let used = hs.feed(bytes).map_err(|e| format!("handshake: {e}"))?;
    if !hs.is_done() && !bytes.is_empty() {
        // The server side of a session is done once it has sent its ack.
        while hs.poll_transmit().is_some() {}
    }
    let rest = &bytes[used..];
    let mut dec = Decoder::new(DecoderConfig::new(g));
    dec.feed(rest);
    let (frames, rejections) = decode_all(&mut dec);
    if rejections != 0 || dec.buffered() != 0 {
        return Err(format!(
            "{rejections} rejections, {} bytes left",
            dec.buffered()
        ));
    }
    let mut again = Vec::new();
    for f in &frames {
        again.extend_from_slice(&f.encode(g).map_err(|e| e.to_string())?);
    }
    if again != rest {
        return Err("re-encoding the decoded frames does not reproduce the stream".into());
    }
    Ok(frames)
}

fn check_session(v: &Value) -> Result<(), String> {
    let g = generation(v);
    let s2c = unhex(s(v, "S->C_hex"));
    let c2s = unhex(s(v, "C->S_hex"));
    let name = s(v, "name");
    let cfg = HandshakeConfig::new(g);
    if name.contains("rejected") {
        let mut c = Handshake::client(cfg).unwrap();
        return match c.feed(&s2c) {
            Err(veltix_proto::HandshakeError::ServerFull(_)) if c2s.is_empty() => Ok(()),
            other => Err(format!("expected a server_full rejection, got {other:?}")),
        };
    }
    match g {
        Generation::Gen3 => {
            // Client side reads S->C, server side reads C->S.
            let from_server = replay(g, &s2c, Handshake::client(cfg.clone()).unwrap())?;
            let mut srv = Handshake::server(cfg).unwrap();
            srv.poll_transmit();
            let from_client = replay(g, &c2s, srv)?;
            // The capture's script: client send "first" (id 0), send_and_wait id 5, pings.
            let first = from_client.first().ok_or("no client frames")?;
            if (first.message_type, first.request_id, &first.content[..]) != (200, 0, b"first") {
                return Err(format!("first client frame {first:?}"));
            }
            if !from_server.iter().any(|f| f.message_type == 1)
                || !from_client.iter().any(|f| f.message_type == 0)
            {
                return Err("expected PING/PONG traffic".into());
            }
        }
        Generation::Gen1 => {
            let hello = veltix_proto::Header::parse(g, &s2c).ok_or("short")?;
            let mut ccfg = cfg.clone();
            ccfg.timestamp_ms = hello.timestamp_ms;
            let from_server = replay(g, &s2c, Handshake::client(ccfg).unwrap())?;
            let mut scfg = cfg;
            scfg.hello_id = Some(hello.request_id);
            let mut srv = Handshake::server(scfg).unwrap();
            srv.poll_transmit();
            let from_client = replay(g, &c2s, srv)?;
            if !from_client
                .iter()
                .any(|f| f.request_id == 5 && &f.content[..] == b"hello")
            {
                return Err("missing send_and_wait(id 5, hello)".into());
            }
            if !from_server
                .iter()
                .any(|f| f.request_id == 5 && &f.content[..] == b"echo:hello")
            {
                return Err("missing respond(id 5, echo:hello)".into());
            }
        }
    }
    Ok(())
}

fn main() {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let vectors: Vec<Value> = serde_json::from_str(&text).expect("vectors.json is a JSON list");
    println!("reading {} vectors from {}", vectors.len(), path.display());
    let (mut passed, mut failed) = (0, 0);
    for v in &vectors {
        let kind = s(v, "kind");
        let name = v["name"].as_str().unwrap_or("?");
        let r = std::panic::catch_unwind(|| match kind {
            "frame" => check_frame(v),
            "handshake" => check_handshake(v),
            "buffer_case" => check_buffer_case(v),
            "session" => check_session(v),
            other => Err(format!("unknown kind {other}")),
        })
        .unwrap_or_else(|_| Err("panicked".into()));
        match r {
            Ok(()) => {
                passed += 1;
                println!("vector gen{} {kind}/{name} ... ok", v["generation"]);
            }
            Err(e) => {
                failed += 1;
                println!(
                    "vector gen{} {kind}/{name} ... FAILED: {e}",
                    v["generation"]
                );
            }
        }
    }
    println!("vectors: {passed} passed, {failed} failed");
    assert!(vectors.len() >= 44, "expected at least 44 vectors");
    if failed > 0 {
        std::process::exit(1);
    }
}

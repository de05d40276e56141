//! Feeds arbitrary bytes to all four handshake machines (Gen 1 / Gen 3, server / client), once in
//! one piece and once in arbitrary pieces, and checks that both runs end the same way and that
//! no machine consumes more bytes than it was given or any byte after its end.
//!
//! Input layout: `[mode, seed, ...peer bytes]`. `mode` bit 0: put a valid Gen 3 server hello in
//! front of the Gen 3 client's input (so the fuzzer reaches the acknowledgement state).
//! `seed` drives the piece sizes (1-byte pieces when 0).

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use veltix_proto::handshake::server_hello;
use veltix_proto::{Generation, Handshake, HandshakeConfig, HandshakeError, Role};

/// The request id of the captured Gen 1 HELLO (PROTOCOL.md §A.3.1), so that the captured
/// HELLO_ACK in the seed corpus completes the Gen 1 server handshake.
const GEN1_HELLO_ID: u32 = 0x3aad_b43d;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (mode, seed) = (data[0], data[1]);
    let peer = &data[2..];
    for generation in [Generation::Gen3, Generation::Gen1] {
        for role in [Role::Server, Role::Client] {
            let input = if generation == Generation::Gen3 && role == Role::Client && mode & 1 != 0 {
                let mut v = server_hello(&HandshakeConfig::new(Generation::Gen3)).unwrap().to_vec();
                v.extend_from_slice(peer);
                v
            } else {
                peer.to_vec()
            };
            let whole = run(generation, role, &[&input[..]]);
            let split = run(generation, role, &pieces(seed, &input));
            assert_eq!(
                whole, split,
                "{generation} {role:?}: outcome depends on the pieces"
            );
        }
    }
});

fn pieces(seed: u8, input: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut state = u32::from(seed);
    let mut rest = input;
    while !rest.is_empty() {
        let n = if seed == 0 {
            1
        } else {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            1 + (state >> 16) as usize % 48
        };
        let (a, b) = rest.split_at(n.min(rest.len()));
        out.push(a);
        rest = b;
    }
    out
}

#[derive(Debug, PartialEq)]
struct Outcome {
    done: bool,
    error: Option<HandshakeError>,
    used: usize,
    sent: Vec<Bytes>,
    peer_version: Option<String>,
    peer_hello: Option<String>,
}

fn machine(generation: Generation, role: Role) -> Handshake {
    let mut cfg = HandshakeConfig::new(generation);
    cfg.hello_id = Some(GEN1_HELLO_ID);
    cfg.timestamp_ms = 269_966;
    match role {
        Role::Server => Handshake::server(cfg).unwrap(),
        Role::Client => Handshake::client(cfg).unwrap(),
    }
}

fn run(generation: Generation, role: Role, pieces: &[&[u8]]) -> Outcome {
    let mut hs = machine(generation, role);
    assert_eq!(hs.role(), role);
    let mut sent = Vec::new();
    let mut used = 0;
    let mut error = None;
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    while let Some(b) = hs.poll_transmit() {
        sent.push(b);
    }
    for piece in pieces {
        let was_done = hs.is_done();
        let leftover = match hs.feed(piece) {
            Ok(n) => {
                assert!(n <= piece.len(), "consumed {n} of {} bytes", piece.len());
                if was_done {
                    assert_eq!(n, 0, "consumed bytes after the end of the handshake");
                }
                used += n;
                n < piece.len()
            }
            Err(e) => {
                assert!(!hs.is_done());
                // A failed handshake stays failed.
                assert!(hs.feed(b"{}").is_err());
                error = Some(e);
                // What was queued before the failure (a Gen 3 client's hello) is still handed out.
                while let Some(b) = hs.poll_transmit() {
                    sent.push(b);
                }
                break;
            }
        };
        while let Some(b) = hs.poll_transmit() {
            sent.push(b);
        }
        // Bytes are left over only when the handshake is complete.
        assert!(!leftover || hs.is_done());
        if hs.is_done() {
            // Bytes after the handshake are never taken.
            assert_eq!(hs.feed(b"VX\0\0\0").unwrap(), 0);
        }
    }
    assert!(used <= total);
    assert!(sent.len() <= 2);
    let done = hs.is_done();
    if done {
        assert!(hs.peer_version().is_some());
        if generation == Generation::Gen3 {
            assert!(hs.peer_hello().is_some());
        }
    }
    if error.is_some() {
        // Only the bytes up to the failure matter; make the two runs comparable.
        used = 0;
    }
    Outcome {
        done,
        error,
        used,
        sent,
        peer_version: hs.peer_version().map(str::to_string),
        peer_hello: hs.peer_hello().map(|m| format!("{m:?}")),
    }
}

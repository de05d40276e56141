//! Raw TCP peers for the integration tests: the client side of a correct Gen 3 handshake over a
//! plain `std::net::TcpStream`, after which the test writes (or withholds) whatever it likes.

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use veltix::proto::{Generation, Handshake, HandshakeConfig};

/// Runs the client side of the Gen 3 handshake on `s`. Returns the bytes that arrived after the
/// handshake in the same reads (frames the server sent right behind its answer). Panics if the
/// server closes, times out (the stream's read timeout) or answers with something invalid.
pub fn gen3_handshake(s: &mut TcpStream) -> Vec<u8> {
    let mut hs = Handshake::client(HandshakeConfig::new(Generation::Gen3)).unwrap();
    let mut buf = [0u8; 4096];
    let mut after = Vec::new();
    loop {
        while let Some(b) = hs.poll_transmit() {
            s.write_all(&b).expect("handshake write");
        }
        if hs.is_done() {
            return after;
        }
        let n = s.read(&mut buf).expect("handshake read");
        assert!(n > 0, "the server closed during the handshake");
        let used = hs.feed(&buf[..n]).expect("handshake");
        after.extend_from_slice(&buf[used..n]);
    }
}

/// Connects to `addr` and completes the Gen 3 handshake (reads time out after `read_timeout`).
/// Asserts that the server sent nothing beyond its handshake answer.
pub fn gen3_peer(addr: SocketAddr, read_timeout: Duration) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("tcp connect");
    s.set_read_timeout(Some(read_timeout))
        .expect("read timeout");
    let after = gen3_handshake(&mut s);
    assert!(
        after.is_empty(),
        "no frames expected during the handshake, got {} bytes",
        after.len()
    );
    s
}

/// Reads and discards until the server closes the socket: `true` on EOF or reset, `false` if
/// the read timeout expired (or another error) first.
pub fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// A Gen 3 frame of type `code` (id 1, content `x`) whose CRC no longer matches: one bit of
/// its header flipped. A server must reject it (`crc_mismatch`) and close the connection.
pub fn corrupt_gen3_frame(code: u16) -> Vec<u8> {
    let mut bad = veltix::proto::Frame::new(code, 1, &b"x"[..])
        .encode(veltix::proto::Generation::Gen3)
        .expect("frame")
        .to_vec();
    bad[9] ^= 1;
    bad
}

//! Edge cases of the handshakes (PROTOCOL.md §A.3 for Gen 1, §B.3 for Gen 3): message length
//! limit, what counts as a JSON object, the `pv` rule, refusals, encodings, and peers of the
//! wrong generation.

use bytes::Bytes;
use veltix_proto::handshake::{ack_message, server_full_message, server_hello, MAX_HANDSHAKE_LEN};
use veltix_proto::{
    Frame, FrameError, Generation, Handshake, HandshakeConfig, HandshakeError, VersionPayloadError,
};

fn gen3_server() -> Handshake {
    let mut hs = Handshake::server(HandshakeConfig::new(Generation::Gen3)).unwrap();
    assert!(hs.poll_transmit().is_some()); // our hello
    hs
}

fn gen3_client() -> Handshake {
    Handshake::client(HandshakeConfig::new(Generation::Gen3)).unwrap()
}

/// A Gen 3 handshake message: `u16` length + body.
fn msg(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// A Gen 3 client that has accepted the server hello and sent its own.
fn gen3_client_after_hello() -> Handshake {
    let mut c = gen3_client();
    let hello = server_hello(&HandshakeConfig::new(Generation::Gen3)).unwrap();
    assert_eq!(c.feed(&hello).unwrap(), hello.len());
    assert!(c.poll_transmit().is_some());
    c
}

/// Feeds a JSON body as a hello to a Gen 3 server and to a Gen 3 client.
fn hello_results(body: &[u8]) -> [Result<usize, HandshakeError>; 2] {
    let m = msg(body);
    [gen3_server().feed(&m), gen3_client().feed(&m)]
}

fn assert_accepted(body: &[u8]) {
    let m = msg(body);
    let mut server = gen3_server();
    assert_eq!(server.feed(&m), Ok(m.len()), "server: {body:?}");
    assert_eq!(server.poll_transmit(), Some(ack_message()));
    assert!(server.is_done());
    let mut client = gen3_client();
    assert_eq!(client.feed(&m), Ok(m.len()), "client: {body:?}");
    assert!(client.poll_transmit().is_some(), "client sends its hello");
}

fn assert_incompatible(body: &[u8]) {
    for r in hello_results(body) {
        assert!(
            matches!(r, Err(HandshakeError::IncompatibleVersion { .. })),
            "{:?}: {r:?}",
            String::from_utf8_lossy(body)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Gen 3: length limit

/// A JSON object of exactly `len` bytes with a compatible `pv`.
fn padded_hello(len: usize) -> Vec<u8> {
    let head = br#"{"v": "3.3.0", "pv": "1.0", "pad": ""#;
    let tail = br#""}"#;
    let mut body = head.to_vec();
    body.resize(len - tail.len(), b'x');
    body.extend_from_slice(tail);
    assert_eq!(body.len(), len);
    body
}

#[test]
fn gen3_length_30720_is_accepted() {
    assert_eq!(MAX_HANDSHAKE_LEN, 30_720);
    let m = msg(&padded_hello(30_720));
    assert_eq!(&m[..2], &[0x78, 0x00]);
    let mut server = gen3_server();
    assert_eq!(server.feed(&m), Ok(30_722));
    assert_eq!(server.poll_transmit(), Some(ack_message()));
    assert!(server.is_done());
    let mut client = gen3_client();
    assert_eq!(client.feed(&m), Ok(30_722));
}

#[test]
fn gen3_length_30721_is_rejected_before_the_body() {
    for mut hs in [gen3_server(), gen3_client(), gen3_client_after_hello()] {
        // Only the length prefix: refused at once, without waiting for 30721 bytes.
        assert_eq!(
            hs.feed(&[0x78, 0x01]),
            Err(HandshakeError::TooLong { len: 30_721 })
        );
        assert!(!hs.is_done());
        assert!(hs.feed(b"{}").is_err(), "a failed handshake stays failed");
    }
    // Split prefix, and the largest possible length.
    let mut hs = gen3_server();
    assert_eq!(hs.feed(&[0xFF]), Ok(1));
    assert_eq!(
        hs.feed(&[0xFF]),
        Err(HandshakeError::TooLong { len: 65_535 })
    );
}

// ---------------------------------------------------------------------------------------------
// Gen 3: the body must be a non-empty JSON object

#[test]
fn gen3_non_json_is_rejected() {
    for body in [
        &b"hello"[..],
        b"{",
        b"{\"pv\": \"1.0\"",
        b"",
        b"\xff\xfe\xfd",
        b"{'pv': '1.0'}",
    ] {
        for r in hello_results(body) {
            assert!(
                matches!(r, Err(HandshakeError::InvalidJson(_))),
                "{body:?}: {r:?}"
            );
        }
    }
}

#[test]
fn gen3_json_that_is_not_a_non_empty_object_is_rejected() {
    for body in [
        &br#"[1, 2]"#[..],
        br#"[{"pv": "1.0"}]"#,
        br#""1.0""#,
        b"42",
        b"null",
        b"true",
        b"{}",
        b" { } ",
    ] {
        for r in hello_results(body) {
            assert_eq!(r, Err(HandshakeError::NotAnObject), "{body:?}");
        }
    }
}

#[test]
fn gen3_any_formatting_is_accepted() {
    assert_accepted(br#"{"pv":"1.0"}"#);
    assert_accepted(
        b"\n{ \"meta\" : {\"id_window\": 30000},\t\"pv\" : \"1.0\", \"v\": \"2.0.3\" }\n",
    );
    assert_accepted(br#"{"pv": "2.0", "pv": "1.0"}"#); // duplicate keys: the last one wins
}

// ---------------------------------------------------------------------------------------------
// Gen 3: the pv rule

#[test]
fn gen3_bad_protocol_versions_are_rejected() {
    for body in [
        &br#"{"v": "3.3.0"}"#[..],      // missing
        br#"{"v": "3.3.0", "pv": ""}"#, // empty
        br#"{"pv": 1.0}"#,              // not a string
        br#"{"pv": 1}"#,
        br#"{"pv": null}"#,
        br#"{"pv": ["1", "0"]}"#,
        br#"{"pv": "2.0"}"#, // other major
        br#"{"pv": "0.9"}"#,
        br#"{"pv": "1"}"#, // not MAJOR.MINOR
        br#"{"pv": "1.0.0"}"#,
        br#"{"pv": "1.x"}"#,
        br#"{"pv": ".0"}"#,
        br#"{"pv": "1."}"#,
        br#"{"pv": "1_0.0"}"#, // int("1_0") == 10
    ] {
        assert_incompatible(body);
    }
}

#[test]
fn gen3_lenient_protocol_versions_are_accepted() {
    // Python: `int()` of each part, MAJOR == 1, MINOR ignored.
    for pv in [
        "1.0", "1.9", " 1 .0", "1. 0 ", "+1.0", "01.0", "1.+7", "1.1_0",
    ] {
        assert_accepted(format!(r#"{{"v": "3.3.0", "pv": "{pv}", "meta": {{}}}}"#).as_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// Gen 3: refusal and acknowledgement

#[test]
fn gen3_error_key_is_server_full_whatever_the_reason() {
    let cases: [(&[u8], &str); 4] = [
        (br#"{"error": "server_full"}"#, "server_full"),
        (br#"{"error": "anything"}"#, "anything"),
        (br#"{"error": 5}"#, "5"),
        // Checked before pv.
        (br#"{"v": "3.3.0", "pv": "1.0", "error": "busy"}"#, "busy"),
    ];
    for (body, reason) in cases {
        let mut c = gen3_client();
        assert_eq!(
            c.feed(&msg(body)),
            Err(HandshakeError::ServerFull(reason.into())),
            "{body:?}"
        );
        assert_eq!(
            c.poll_transmit(),
            None,
            "nothing is sent to a refusing server"
        );
    }
    let mut c = gen3_client();
    assert_eq!(
        c.feed(&server_full_message()),
        Err(HandshakeError::ServerFull("server_full".into()))
    );
}

#[test]
fn gen3_server_ignores_an_error_key_from_the_client() {
    // Only the client treats "error" specially; the server only checks pv.
    let mut s = gen3_server();
    let m = msg(br#"{"error": "x", "pv": "1.0"}"#);
    assert_eq!(s.feed(&m), Ok(m.len()));
    assert_eq!(s.poll_transmit(), Some(ack_message()));
}

#[test]
fn gen3_ack_must_be_result_ok_exactly() {
    for body in [
        &br#"{"result": "OK"}"#[..],
        br#"{"result": "ok "}"#,
        br#"{"result": true}"#,
        br#"{"status": "ok"}"#,
    ] {
        let mut c = gen3_client_after_hello();
        let r = c.feed(&msg(body));
        assert!(
            matches!(r, Err(HandshakeError::NotAcknowledged(_))),
            "{body:?}: {r:?}"
        );
        assert!(!c.is_done());
    }
    // An "error" here is the server refusing us after reading our hello (its authenticate
    // hook): Rejected with the reason, not ServerFull (Python 3.3.0 sees a plain failure).
    for (body, reason) in [
        (&br#"{"error": "server_full"}"#[..], "server_full"),
        (br#"{"error": "unauthorized"}"#, "unauthorized"),
        (br#"{"error": {"code": 7}}"#, r#"{"code":7}"#),
    ] {
        let mut c = gen3_client_after_hello();
        assert_eq!(
            c.feed(&msg(body)),
            Err(HandshakeError::Rejected(reason.into()))
        );
        assert!(!c.is_done());
    }
    let mut c = gen3_client_after_hello();
    let ok = msg(br#"{"result": "ok", "extra": [1]}"#);
    assert_eq!(c.feed(&ok), Ok(ok.len()));
    assert!(c.is_done());
}

// ---------------------------------------------------------------------------------------------
// Gen 3: encodings accepted by Python's json.loads

fn utf16(s: &str, be: bool, bom: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if bom {
        out.extend_from_slice(if be { &[0xFE, 0xFF] } else { &[0xFF, 0xFE] });
    }
    for u in s.encode_utf16() {
        out.extend_from_slice(&if be { u.to_be_bytes() } else { u.to_le_bytes() });
    }
    out
}

#[test]
fn gen3_bom_and_utf16_json_are_accepted() {
    let text = r#"{"v": "3.3.0", "pv": "1.0", "meta": {}}"#;
    let mut with_bom = b"\xEF\xBB\xBF".to_vec();
    with_bom.extend_from_slice(text.as_bytes());
    assert_accepted(&with_bom);
    for be in [false, true] {
        for bom in [false, true] {
            assert_accepted(&utf16(text, be, bom));
        }
    }
    // UTF-32 too (auto-detected from the zero bytes).
    let utf32: Vec<u8> = text
        .chars()
        .flat_map(|c| (c as u32).to_le_bytes())
        .collect();
    assert_accepted(&utf32);
    // Non-ASCII text survives the decoding.
    let mut c = gen3_client();
    let body = utf16(r#"{"v": "3.3.0-é€😀", "pv": "1.0"}"#, false, true);
    c.feed(&msg(&body)).unwrap();
    assert_eq!(c.peer_version(), Some("3.3.0-é€😀"));
}

// ---------------------------------------------------------------------------------------------
// Wrong generation

#[test]
fn gen1_client_against_gen3_server_is_wrong_generation() {
    let gen3_hello = server_hello(&HandshakeConfig::new(Generation::Gen3)).unwrap();
    for bytes in [gen3_hello.clone(), server_full_message()] {
        // Whole, and one byte at a time.
        let mut c = Handshake::client(HandshakeConfig::new(Generation::Gen1)).unwrap();
        assert_eq!(
            c.feed(&bytes),
            Err(HandshakeError::WrongGeneration(Generation::Gen3))
        );
        let mut c = Handshake::client(HandshakeConfig::new(Generation::Gen1)).unwrap();
        let r = bytes
            .iter()
            .map(|b| c.feed(&[*b]))
            .find(Result::is_err)
            .expect("fails");
        assert!(
            matches!(r, Err(HandshakeError::WrongGeneration(_))),
            "{r:?}"
        );
        assert_eq!(c.poll_transmit(), None);
    }
}

#[test]
fn gen3_client_against_gen1_server_is_wrong_generation() {
    let mut cfg = HandshakeConfig::new(Generation::Gen1);
    cfg.hello_id = Some(0x3aad_b43d);
    cfg.timestamp_ms = 269_966;
    let hello = Handshake::server(cfg).unwrap().poll_transmit().unwrap();
    // The captured 1.6.9 HELLO (PROTOCOL.md §A.3.1).
    assert_eq!(
        hex(&hello),
        "000a0000000765e91ff00000000000041e8e3aadb43d0005312e362e39"
    );
    let mut c = gen3_client();
    assert_eq!(
        c.feed(&hello),
        Err(HandshakeError::WrongGeneration(Generation::Gen1))
    );
    let mut c = gen3_client();
    let r = hello
        .iter()
        .map(|b| c.feed(&[*b]))
        .find(Result::is_err)
        .expect("fails");
    assert!(
        matches!(r, Err(HandshakeError::WrongGeneration(_))),
        "{r:?}"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Gen 1

const HELLO_ID: u32 = 0x3aad_b43d;

fn version_payload(v: &str) -> Vec<u8> {
    let mut p = (v.len() as u16).to_be_bytes().to_vec();
    p.extend_from_slice(v.as_bytes());
    p
}

fn gen1_frame(message_type: u16, id: u32, content: Vec<u8>) -> Bytes {
    Frame::new(message_type, id, content)
        .encode(Generation::Gen1)
        .unwrap()
}

fn gen1_server() -> Handshake {
    let mut cfg = HandshakeConfig::new(Generation::Gen1);
    cfg.hello_id = Some(HELLO_ID);
    let mut s = Handshake::server(cfg).unwrap();
    let hello = s.poll_transmit().unwrap();
    assert_eq!(&hello[18..22], &HELLO_ID.to_be_bytes());
    s
}

#[test]
fn gen1_server_accepts_a_proper_ack() {
    let ack = gen1_frame(11, HELLO_ID, version_payload("1.6.9"));
    let mut s = gen1_server();
    assert_eq!(s.feed(&ack), Ok(29));
    assert!(s.is_done());
    assert_eq!(s.peer_version(), Some("1.6.9"));
}

#[test]
fn gen1_server_rejects_a_bad_ack() {
    let cases = [
        // Wrong id.
        gen1_frame(11, HELLO_ID ^ 1, version_payload("1.6.9")),
        // Wrong type (a HELLO, a user frame, a PING) with the right id.
        gen1_frame(10, HELLO_ID, version_payload("1.6.9")),
        gen1_frame(200, HELLO_ID, version_payload("1.6.9")),
        gen1_frame(0, HELLO_ID, Vec::new()),
    ];
    for ack in cases {
        let mut s = gen1_server();
        let r = s.feed(&ack);
        assert!(
            matches!(r, Err(HandshakeError::UnexpectedFrame { .. })),
            "{r:?}"
        );
        assert!(!s.is_done());
    }
    for version in ["1.7.0", "2.0.0", "1.6.10", "1.6", "", "x.y.z"] {
        let mut s = gen1_server();
        let r = s.feed(&gen1_frame(11, HELLO_ID, version_payload(version)));
        assert!(
            matches!(r, Err(HandshakeError::IncompatibleVersion { .. })),
            "{version:?}: {r:?}"
        );
    }
    // Version length beyond the content, and a bad CRC.
    let mut s = gen1_server();
    let r = s.feed(&gen1_frame(11, HELLO_ID, vec![0, 9, b'1']));
    assert_eq!(
        r,
        Err(HandshakeError::MalformedVersion(
            VersionPayloadError::Truncated {
                declared: 9,
                available: 1
            }
        ))
    );
    // A version string that is not UTF-8.
    let mut s = gen1_server();
    let r = s.feed(&gen1_frame(11, HELLO_ID, vec![0, 2, 0xff, 0xfe]));
    assert_eq!(
        r,
        Err(HandshakeError::MalformedVersion(
            VersionPayloadError::NotUtf8
        ))
    );
    // Once failed, failed for good.
    assert_eq!(s.feed(b"x"), Err(HandshakeError::AlreadyFailed));
    let mut bad_crc = gen1_frame(11, HELLO_ID, version_payload("1.6.9")).to_vec();
    bad_crc[6] ^= 0xFF;
    let mut s = gen1_server();
    let r = s.feed(&bad_crc);
    assert!(
        matches!(
            r,
            Err(HandshakeError::MalformedFrame(
                FrameError::CrcMismatch { .. }
            ))
        ),
        "{r:?}"
    );
}

#[test]
fn gen1_handshake_frame_size_is_limited() {
    // A header declaring a huge frame fails as soon as the header is complete.
    let mut header = gen1_frame(11, HELLO_ID, Vec::new()).to_vec();
    header[2..6].copy_from_slice(&u32::MAX.to_be_bytes());
    let mut s = gen1_server();
    let r = s.feed(&header);
    assert!(
        matches!(
            r,
            Err(HandshakeError::MalformedFrame(FrameError::TooLong { .. }))
        ),
        "{r:?}"
    );
}

fn gen1_client_with_hello(version: &str) -> (Handshake, Result<usize, HandshakeError>) {
    let hello = gen1_frame(10, HELLO_ID, version_payload(version));
    let mut c = Handshake::client(HandshakeConfig::new(Generation::Gen1)).unwrap();
    let r = c.feed(&hello);
    (c, r)
}

#[test]
fn gen1_client_accepts_the_versions_a_169_client_accepts() {
    for version in ["1.6.6", "1.6.8", "1.6.9", "v1.6.9"] {
        let (mut c, r) = gen1_client_with_hello(version);
        assert_eq!(r, Ok(22 + 2 + version.len()), "{version}");
        assert_eq!(c.peer_version(), Some(version));
        let ack = c.poll_transmit().expect("HELLO_ACK");
        assert!(c.is_done());
        // HELLO_ACK: type 11, the HELLO's id, our version.
        assert_eq!(&ack[0..2], &[0, 11]);
        assert_eq!(&ack[18..22], &HELLO_ID.to_be_bytes());
        assert_eq!(&ack[22..], &version_payload("1.6.9")[..]);
    }
    // Deliberately wider than Python's 1.6.9 client: the whole Gen 1 wire range 1.6.2 – 1.6.9.
    let (_, r) = gen1_client_with_hello("1.6.2");
    assert!(r.is_ok());
}

#[test]
fn gen1_client_rejects_other_versions() {
    for version in [
        "1.7.0", "1.6.10", "1.6.1", "2.0.0", "vv1.6.9", "1.6", "1", "",
    ] {
        let (mut c, r) = gen1_client_with_hello(version);
        assert!(
            matches!(r, Err(HandshakeError::IncompatibleVersion { .. })),
            "{version:?}: {r:?}"
        );
        assert_eq!(c.poll_transmit(), None, "no ACK for {version:?}");
        assert!(!c.is_done());
    }
}

#[test]
fn gen1_client_rejects_a_frame_that_is_not_a_hello() {
    let mut c = Handshake::client(HandshakeConfig::new(Generation::Gen1)).unwrap();
    let r = c.feed(&gen1_frame(200, 1, b"hi".to_vec()));
    assert!(
        matches!(
            r,
            Err(HandshakeError::UnexpectedFrame {
                message_type: 200,
                request_id: 1
            })
        ),
        "{r:?}"
    );
}

#[test]
fn gen1_handshake_leaves_following_frames_alone() {
    let hello = gen1_frame(10, HELLO_ID, version_payload("1.6.9"));
    let ping = gen1_frame(0, 7, Vec::new());
    let input = [&hello[..], &ping[..]].concat();
    let mut c = Handshake::client(HandshakeConfig::new(Generation::Gen1)).unwrap();
    assert_eq!(c.feed(&input), Ok(hello.len()));
    assert_eq!(c.feed(&ping), Ok(0));
}

// ---------------------------------------------------------------------------------------------
// Gen 3 server with a verdict (the authenticate hook)

#[test]
fn gen3_server_with_verdict_waits_then_accepts_or_rejects() {
    use veltix_proto::{Generation, Handshake, HandshakeConfig};
    let hello = msg(br#"{"v": "3.3.0", "pv": "1.0", "meta": {"token": "t"}}"#);
    // Accept: nothing is sent before the verdict, then exactly the ack.
    let mut s = Handshake::server_with_verdict(HandshakeConfig::new(Generation::Gen3)).unwrap();
    assert!(s.poll_transmit().is_some()); // our hello
    let mut pipelined = hello.to_vec();
    pipelined.extend_from_slice(b"VX\x00");
    assert_eq!(
        s.feed(&pipelined),
        Ok(hello.len()),
        "frame bytes are left alone"
    );
    assert!(s.awaiting_verdict() && !s.is_done());
    assert_eq!(s.poll_transmit(), None);
    assert_eq!(s.peer_hello().unwrap()["meta"]["token"], "t");
    s.accept();
    assert_eq!(s.poll_transmit(), Some(ack_message()));
    assert!(s.is_done() && !s.awaiting_verdict());
    // Reject: the refusal, byte-exact as Python formats it, and the handshake never completes.
    let mut s = Handshake::server_with_verdict(HandshakeConfig::new(Generation::Gen3)).unwrap();
    let _ = s.poll_transmit();
    assert_eq!(s.feed(&hello), Ok(hello.len()));
    s.reject("unauthorized").unwrap();
    assert_eq!(
        s.poll_transmit().as_deref(),
        Some(&b"\x00\x19{\"error\": \"unauthorized\"}"[..])
    );
    assert!(!s.is_done() && !s.awaiting_verdict());
    assert!(s.feed(b"more").is_err());
    // A bad hello fails as before, with no verdict asked.
    let mut s = Handshake::server_with_verdict(HandshakeConfig::new(Generation::Gen3)).unwrap();
    let _ = s.poll_transmit();
    assert!(s.feed(&msg(br#"{"pv": "2.0"}"#)).is_err());
    assert!(!s.awaiting_verdict());
}

#[test]
fn a_tls_client_hello_is_recognised_by_a_plaintext_server() {
    use veltix_proto::{Generation, Handshake, HandshakeConfig};
    let mut s = Handshake::server(HandshakeConfig::new(Generation::Gen3)).unwrap();
    let _ = s.poll_transmit();
    // 16 03 01 <len> 01 ...: a TLS record carrying a ClientHello.
    assert_eq!(
        s.feed(&[0x16, 0x03, 0x01, 0x00, 0xf0, 0x01, 0x00]),
        Err(HandshakeError::UnexpectedTls)
    );
}

// ---------------------------------------------------------------------------------------------
// Outgoing length: an error, never a silent truncation

#[test]
fn outgoing_handshake_messages_that_are_too_long_are_errors() {
    use veltix_proto::handshake::encode_json_message;
    // Gen 3: a version or meta that makes our hello longer than 30720 bytes.
    for generation in [Generation::Gen3, Generation::Gen1] {
        let mut cfg = HandshakeConfig::new(generation);
        cfg.version = "9".repeat(70_000);
        for r in [
            Handshake::server(cfg.clone()).err(),
            Handshake::client(cfg.clone()).err(),
            Handshake::server_with_verdict(cfg.clone()).err(),
        ] {
            assert!(
                matches!(r, Some(HandshakeError::OutgoingTooLong { len, limit }) if len > limit && limit == MAX_HANDSHAKE_LEN),
                "{generation}: {r:?}"
            );
        }
    }
    let mut cfg = HandshakeConfig::new(Generation::Gen3);
    cfg.meta.insert(
        "pad".into(),
        serde_json::Value::String("x".repeat(MAX_HANDSHAKE_LEN)),
    );
    assert!(matches!(
        Handshake::client(cfg),
        Err(HandshakeError::OutgoingTooLong { .. })
    ));
    // Exactly at the limit is fine; one more byte is not.
    let body_len =
        |v: &serde_json::Value| veltix_proto::json::to_python_json(v, false).unwrap().len();
    let mut pad = String::new();
    let at_limit = loop {
        let v = serde_json::json!({ "pad": pad });
        if body_len(&v) == MAX_HANDSHAKE_LEN {
            break v;
        }
        pad.push('x');
    };
    let m = encode_json_message(&at_limit).unwrap();
    assert_eq!(m.len(), 2 + MAX_HANDSHAKE_LEN);
    assert_eq!(&m[..2], &(MAX_HANDSHAKE_LEN as u16).to_be_bytes());
    pad.push('x');
    assert_eq!(
        encode_json_message(&serde_json::json!({ "pad": pad })),
        Err(HandshakeError::OutgoingTooLong {
            len: MAX_HANDSHAKE_LEN + 1,
            limit: MAX_HANDSHAKE_LEN
        })
    );
    // A refusal reason that does not fit: an error, and the verdict is still awaited.
    let mut s = Handshake::server_with_verdict(HandshakeConfig::new(Generation::Gen3)).unwrap();
    s.poll_transmit();
    let client_hello = msg(br#"{"v": "3.3.0", "pv": "1.0", "meta": {}}"#);
    s.feed(&client_hello).unwrap();
    assert!(s.awaiting_verdict());
    assert!(matches!(
        s.reject(&"r".repeat(MAX_HANDSHAKE_LEN)),
        Err(HandshakeError::OutgoingTooLong { .. })
    ));
    assert!(s.awaiting_verdict());
    assert_eq!(s.reject("no"), Ok(()));
    assert_eq!(s.feed(b"x"), Err(HandshakeError::AlreadyFailed));
}

#[test]
fn handshake_errors_display_as_sentences() {
    let cases: Vec<(HandshakeError, &str)> = vec![
        (
            HandshakeError::WrongGeneration(Generation::Gen1),
            "the peer speaks another Veltix wire generation (gen1); configure that generation",
        ),
        (
            HandshakeError::OutgoingTooLong { len: 40_000, limit: 30_720 },
            "outgoing handshake message of 40000 bytes exceeds the 30720-byte limit",
        ),
        (HandshakeError::AlreadyFailed, "the handshake already failed"),
        (
            HandshakeError::MalformedFrame(FrameError::CrcMismatch { expected: 1, actual: 2 }),
            "malformed handshake frame: CRC mismatch: the header says 0x00000001, the content hashes to 0x00000002",
        ),
    ];
    for (e, text) in cases {
        assert_eq!(e.to_string(), text);
    }
}

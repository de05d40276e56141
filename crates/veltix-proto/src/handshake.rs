//! Handshake state machines for both roles and both generations, without I/O.
//!
//! Drive one like this: send whatever [`Handshake::poll_transmit`] returns, feed received bytes
//! to [`Handshake::feed`] (it reports how many it consumed: bytes after the end of the handshake
//! belong to the frame decoder), and stop when [`Handshake::is_done`] is true. Deadlines are the
//! caller's business (the runtime enforces a total `handshake_timeout`).

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Map, Value};

use crate::frame::{encode_parts, parse_one, Generation, ParseOne, GEN1_HEADER_LEN};
use crate::types::{HELLO, HELLO_ACK};
use crate::{json, HandshakeError, VersionPayloadError};

/// Largest Gen 3 handshake message body Python accepts (30 KiB; exactly 30720 is allowed).
pub const MAX_HANDSHAKE_LEN: usize = 30 * 1024;
/// The Gen 3 protocol version (`pv`) we speak.
pub const PROTOCOL_VERSION: &str = "1.0";
/// The package version (`v`) we announce in Gen 3 by default, as Python Veltix 3.3.0 does;
/// only informational, but it makes our handshake bytes identical to Python's.
pub const GEN3_ANNOUNCED_VERSION: &str = "3.3.0";
/// The package version we announce in Gen 1 by default (a 1.6.9 client accepts 1.6.6/1.6.8/1.6.9).
pub const GEN1_ANNOUNCED_VERSION: &str = "1.6.9";

/// Which end of the connection we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Accepted the connection; speaks first.
    Server,
    /// Opened the connection.
    Client,
}

/// What we announce in the handshake.
///
/// ```
/// use veltix_proto::{Generation, HandshakeConfig};
/// let cfg = HandshakeConfig::new(Generation::Gen3);
/// assert_eq!(cfg.version, "3.3.0");
/// ```
#[derive(Clone, Debug)]
pub struct HandshakeConfig {
    /// Wire generation.
    pub generation: Generation,
    /// Package version string (`v` in Gen 3, the HELLO/HELLO_ACK version in Gen 1).
    pub version: String,
    /// Gen 3 `meta` object (Python sends `{}`).
    pub meta: Map<String, Value>,
    /// Gen 1: request id of the server's HELLO (random if `None`).
    pub hello_id: Option<u32>,
    /// Gen 1: timestamp written in our handshake frame (the caller's monotonic clock, in ms).
    pub timestamp_ms: u64,
}

impl HandshakeConfig {
    /// Python-identical defaults for a generation.
    pub fn new(generation: Generation) -> Self {
        HandshakeConfig {
            generation,
            version: match generation {
                Generation::Gen1 => GEN1_ANNOUNCED_VERSION,
                Generation::Gen3 => GEN3_ANNOUNCED_VERSION,
            }
            .to_string(),
            meta: Map::new(),
            hello_id: None,
            timestamp_ms: 0,
        }
    }
}

/// Encodes one Gen 3 handshake message: `u16` big-endian length + Python-formatted JSON.
///
/// A body longer than [`MAX_HANDSHAKE_LEN`] (which no peer accepts, and which a `u16` may not
/// even hold) is an error, never truncated.
///
/// ```
/// use veltix_proto::handshake::encode_json_message;
/// use veltix_proto::HandshakeError;
/// let msg = encode_json_message(&serde_json::json!({"result": "ok"}))?;
/// assert_eq!(&msg[..], b"\x00\x10{\"result\": \"ok\"}");
/// let huge = serde_json::json!({ "pad": "x".repeat(70_000) });
/// assert!(matches!(encode_json_message(&huge), Err(HandshakeError::OutgoingTooLong { .. })));
/// # Ok::<(), HandshakeError>(())
/// ```
pub fn encode_json_message(value: &Value) -> Result<Bytes, HandshakeError> {
    // Serializing a serde_json::Value into a Vec cannot fail.
    let body = json::to_python_json(value, false).unwrap_or_default();
    if body.len() > MAX_HANDSHAKE_LEN {
        return Err(HandshakeError::OutgoingTooLong {
            len: body.len(),
            limit: MAX_HANDSHAKE_LEN,
        });
    }
    let mut out = BytesMut::with_capacity(2 + body.len());
    // MAX_HANDSHAKE_LEN < u16::MAX: the length fits.
    out.put_u16(body.len() as u16);
    out.put_slice(&body);
    Ok(out.freeze())
}

/// The Gen 3 server hello: `{"v": <version>, "pv": "1.0", "meta": <meta>}`; an error if the
/// configured version and meta make it longer than [`MAX_HANDSHAKE_LEN`].
///
/// ```
/// use veltix_proto::handshake::server_hello;
/// use veltix_proto::{Generation, HandshakeConfig};
/// let hello = server_hello(&HandshakeConfig::new(Generation::Gen3)).unwrap();
/// assert_eq!(&hello[2..], br#"{"v": "3.3.0", "pv": "1.0", "meta": {}}"#);
/// ```
pub fn server_hello(cfg: &HandshakeConfig) -> Result<Bytes, HandshakeError> {
    hello_message(cfg)
}

fn hello_message(cfg: &HandshakeConfig) -> Result<Bytes, HandshakeError> {
    let mut m = Map::new();
    m.insert("v".into(), Value::String(cfg.version.clone()));
    m.insert("pv".into(), Value::String(PROTOCOL_VERSION.into()));
    m.insert("meta".into(), Value::Object(cfg.meta.clone()));
    encode_json_message(&Value::Object(m))
}

/// A constant message: short, so encoding cannot fail.
fn constant_message(value: &Value) -> Bytes {
    encode_json_message(value).unwrap_or_default()
}

/// The Gen 3 acknowledgement `{"result": "ok"}`.
///
/// ```
/// assert_eq!(&veltix_proto::handshake::ack_message()[2..], br#"{"result": "ok"}"#);
/// ```
pub fn ack_message() -> Bytes {
    constant_message(&serde_json::json!({"result": "ok"}))
}

/// The Gen 3 rejection a full server sends instead of its hello: `{"error": "server_full"}`.
///
/// ```
/// let msg = veltix_proto::handshake::server_full_message();
/// assert_eq!(&msg[2..], br#"{"error": "server_full"}"#);
/// ```
pub fn server_full_message() -> Bytes {
    constant_message(&serde_json::json!({"error": "server_full"}))
}

/// Python's `int()` on a string: surrounding whitespace, an optional sign, ASCII digits with
/// single underscores between them.
fn py_int(s: &str) -> Option<i128> {
    let s = s.trim();
    let (neg, digits) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let mut v: i128 = 0;
    for c in digits.chars() {
        if c == '_' {
            continue;
        }
        let d = c.to_digit(10)?;
        v = v.saturating_mul(10).saturating_add(i128::from(d));
    }
    Some(if neg { -v } else { v })
}

/// Python Veltix 3.3.0's protocol-version rule: exactly `MAJOR.MINOR`, both `int()`-parsable,
/// compatible iff `MAJOR == 1`.
///
/// ```
/// use veltix_proto::handshake::protocol_compatible;
/// assert!(protocol_compatible("1.0") && protocol_compatible("1.9") && protocol_compatible(" 1 .+0"));
/// assert!(!protocol_compatible("2.0") && !protocol_compatible("1") && !protocol_compatible("1.0.0"));
/// ```
pub fn protocol_compatible(pv: &str) -> bool {
    let parts: Vec<&str> = pv.split('.').collect();
    parts.len() == 2 && py_int(parts[1]).is_some() && py_int(parts[0]) == Some(1)
}

/// Parses a Gen 1 version string the way a 1.6.9 client does: strip one leading `v`, split on
/// `.`, `int()` the first three parts.
pub fn parse_gen1_version(s: &str) -> Option<(i128, i128, i128)> {
    let s = s.strip_prefix('v').unwrap_or(s);
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() < 3 {
        return None;
    }
    Some((py_int(parts[0])?, py_int(parts[1])?, py_int(parts[2])?))
}

/// Gen 1 versions we interoperate with: the whole Gen 1 wire range 1.6.2 – 1.6.9.
///
/// (A Python 1.6.9 *client* is stricter: it only accepts servers announcing 1.6.6, 1.6.8 or 1.6.9,
/// which is why our server announces 1.6.9.)
pub fn gen1_version_compatible(s: &str) -> bool {
    matches!(parse_gen1_version(s), Some((1, 6, 2..=9)))
}

/// Largest Gen 1 version string we send (what our own receiver accepts; the field is a `u16`).
const MAX_GEN1_VERSION_LEN: usize = MAX_HANDSHAKE_LEN;

fn gen1_version_payload(version: &str) -> Result<Vec<u8>, HandshakeError> {
    let v = version.as_bytes();
    if v.len() > MAX_GEN1_VERSION_LEN {
        return Err(HandshakeError::OutgoingTooLong {
            len: v.len(),
            limit: MAX_GEN1_VERSION_LEN,
        });
    }
    let mut out = Vec::with_capacity(2 + v.len());
    // MAX_GEN1_VERSION_LEN < u16::MAX: the length fits.
    out.extend_from_slice(&(v.len() as u16).to_be_bytes());
    out.extend_from_slice(v);
    Ok(out)
}

fn gen1_version_from_payload(content: &[u8]) -> Result<String, HandshakeError> {
    let (len, rest) = match content {
        [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
        _ => {
            return Err(HandshakeError::MalformedVersion(
                VersionPayloadError::Truncated {
                    declared: 2,
                    available: content.len(),
                },
            ))
        }
    };
    let raw = rest.get(..len).ok_or(HandshakeError::MalformedVersion(
        VersionPayloadError::Truncated {
            declared: len,
            available: rest.len(),
        },
    ))?;
    String::from_utf8(raw.to_vec())
        .map_err(|_| HandshakeError::MalformedVersion(VersionPayloadError::NotUtf8))
}

/// Reads one Gen 3 handshake message (`u16` length + JSON) without consuming a byte past it.
///
/// ```
/// use veltix_proto::handshake::JsonMessageReader;
/// let mut r = JsonMessageReader::default();
/// let input = b"\x00\x10{\"result\": \"ok\"}VX...";
/// let (used, msg) = r.feed(input).unwrap();
/// assert_eq!(used, 18); // the frame bytes after it are left alone
/// assert_eq!(msg.unwrap()["result"], "ok");
/// ```
#[derive(Debug, Default, Clone)]
pub struct JsonMessageReader {
    prefix: Vec<u8>,
    body: Vec<u8>,
}

impl JsonMessageReader {
    /// Consumes bytes of the message; returns how many were used and the object once complete.
    pub fn feed(
        &mut self,
        input: &[u8],
    ) -> Result<(usize, Option<Map<String, Value>>), HandshakeError> {
        let mut used = 0;
        while self.prefix.len() < 2 && used < input.len() {
            self.prefix.push(input[used]);
            used += 1;
        }
        if self.prefix.len() < 2 {
            return Ok((used, None));
        }
        let len = usize::from(u16::from_be_bytes([self.prefix[0], self.prefix[1]]));
        if len > MAX_HANDSHAKE_LEN {
            return Err(HandshakeError::TooLong { len });
        }
        let take = (len - self.body.len()).min(input.len() - used);
        self.body.extend_from_slice(&input[used..used + take]);
        used += take;
        // 16 03 0x ..: a TLS handshake record (ClientHello) where JSON was expected. No JSON
        // text starts with a byte below 0x09, so this cannot be a real handshake message.
        if self.prefix == [0x16, 0x03] && self.body.first().is_some_and(|&b| b <= 0x04) {
            return Err(HandshakeError::UnexpectedTls);
        }
        if self.body.len() < len {
            return Ok((used, None));
        }
        let value = json::from_python_json_bytes(&self.body).map_err(|e| {
            // A Gen 1 HELLO frame starts 00 0a 00 00 00 ..: type 10, then the size.
            if self.prefix == [0, 10] && self.body.starts_with(&[0, 0]) {
                HandshakeError::WrongGeneration(Generation::Gen1)
            } else {
                HandshakeError::InvalidJson(e)
            }
        })?;
        match value {
            Value::Object(m) if !m.is_empty() => Ok((used, Some(m))),
            _ => Err(HandshakeError::NotAnObject),
        }
    }
}

#[derive(Debug)]
enum State {
    G3ServerAwaitHello(JsonMessageReader),
    /// Gen 3 server with a verdict pending: the client's hello is valid, the caller decides.
    G3ServerAwaitVerdict,
    /// Gen 3 server that refused the client: the refusal is queued, nothing more is read.
    Rejected,
    G3ClientAwaitHello(JsonMessageReader),
    G3ClientAwaitAck(JsonMessageReader),
    G1ServerAwaitAck {
        id: u32,
        buf: Vec<u8>,
    },
    G1ClientAwaitHello {
        buf: Vec<u8>,
    },
    Done,
    Failed,
}

/// A handshake in progress, for one role and one generation.
///
/// ```
/// use veltix_proto::{Generation, Handshake, HandshakeConfig};
/// let cfg = HandshakeConfig::new(Generation::Gen3);
/// let mut server = Handshake::server(cfg.clone())?;
/// let mut client = Handshake::client(cfg)?;
/// // Shuttle bytes until both are done.
/// while !(server.is_done() && client.is_done()) {
///     while let Some(b) = server.poll_transmit() { client.feed(&b)?; }
///     while let Some(b) = client.poll_transmit() { server.feed(&b)?; }
/// }
/// assert_eq!(server.peer_version(), Some("3.3.0"));
/// # Ok::<(), veltix_proto::HandshakeError>(())
/// ```
#[derive(Debug)]
pub struct Handshake {
    role: Role,
    /// Gen 3 server: pause after the client's hello until [`Handshake::accept`] or
    /// [`Handshake::reject`].
    verdict: bool,
    cfg: HandshakeConfig,
    /// Our own message, encoded (and length-checked) up front: the Gen 3 hello, or the Gen 1
    /// version payload of HELLO / HELLO_ACK.
    own: Bytes,
    state: State,
    transmit: VecDeque<Bytes>,
    peer_version: Option<String>,
    peer_hello: Option<Map<String, Value>>,
}

impl Handshake {
    fn own_message(cfg: &HandshakeConfig) -> Result<Bytes, HandshakeError> {
        match cfg.generation {
            Generation::Gen3 => hello_message(cfg),
            Generation::Gen1 => gen1_version_payload(&cfg.version).map(Bytes::from),
        }
    }

    /// The server side: its first message (HELLO) is queued for transmission at once.
    ///
    /// Fails with [`HandshakeError::OutgoingTooLong`] if the configured version (and Gen 3
    /// `meta`) make our hello too long for the wire.
    pub fn server(cfg: HandshakeConfig) -> Result<Self, HandshakeError> {
        let own = Self::own_message(&cfg)?;
        let mut hs = Handshake {
            role: Role::Server,
            verdict: false,
            state: State::Failed,
            transmit: VecDeque::new(),
            peer_version: None,
            peer_hello: None,
            own,
            cfg,
        };
        match hs.cfg.generation {
            Generation::Gen3 => {
                hs.transmit.push_back(hs.own.clone());
                hs.state = State::G3ServerAwaitHello(JsonMessageReader::default());
            }
            Generation::Gen1 => {
                let id = hs.cfg.hello_id.unwrap_or_else(|| fastrand::u32(..));
                hs.transmit.push_back(hs.gen1_frame(HELLO.code(), id));
                hs.state = State::G1ServerAwaitAck {
                    id,
                    buf: Vec::new(),
                };
            }
        }
        Ok(hs)
    }

    /// The client side: it waits for the server to speak first.
    ///
    /// Fails with [`HandshakeError::OutgoingTooLong`] if our hello would be too long.
    pub fn client(cfg: HandshakeConfig) -> Result<Self, HandshakeError> {
        let own = Self::own_message(&cfg)?;
        let state = match cfg.generation {
            Generation::Gen3 => State::G3ClientAwaitHello(JsonMessageReader::default()),
            Generation::Gen1 => State::G1ClientAwaitHello { buf: Vec::new() },
        };
        Ok(Handshake {
            role: Role::Client,
            verdict: false,
            cfg,
            own,
            state,
            transmit: VecDeque::new(),
            peer_version: None,
            peer_hello: None,
        })
    }

    /// A Gen 3 server that pauses once the client's hello arrived and is compatible, so the
    /// caller can look at it ([`Handshake::peer_hello`], e.g. credentials in its `meta`) and
    /// then [`accept`](Handshake::accept) or [`reject`](Handshake::reject) the client. Gen 1
    /// has no refusal message: there this is [`Handshake::server`].
    ///
    /// ```
    /// use veltix_proto::{Generation, Handshake, HandshakeConfig, HandshakeError};
    /// let mut server = Handshake::server_with_verdict(HandshakeConfig::new(Generation::Gen3))?;
    /// let mut client = Handshake::client(HandshakeConfig::new(Generation::Gen3))?;
    /// client.feed(&server.poll_transmit().unwrap())?;
    /// server.feed(&client.poll_transmit().unwrap())?;
    /// assert!(server.awaiting_verdict());
    /// server.reject("unauthorized")?;
    /// let refusal = server.poll_transmit().unwrap();
    /// assert_eq!(&refusal[2..], br#"{"error": "unauthorized"}"#);
    /// assert_eq!(client.feed(&refusal), Err(HandshakeError::Rejected("unauthorized".into())));
    /// # Ok::<(), HandshakeError>(())
    /// ```
    pub fn server_with_verdict(cfg: HandshakeConfig) -> Result<Self, HandshakeError> {
        let mut hs = Self::server(cfg)?;
        hs.verdict = true;
        Ok(hs)
    }

    /// True while a [`server_with_verdict`](Handshake::server_with_verdict) handshake waits
    /// for [`accept`](Handshake::accept) or [`reject`](Handshake::reject).
    pub fn awaiting_verdict(&self) -> bool {
        matches!(self.state, State::G3ServerAwaitVerdict)
    }

    /// Accepts the client: queues `{"result": "ok"}`. Does nothing unless a verdict is awaited.
    pub fn accept(&mut self) {
        if self.awaiting_verdict() {
            self.transmit.push_back(ack_message());
            self.state = State::Done;
        }
    }

    /// Refuses the client: queues `{"error": REASON}` (the refusal Python clients understand),
    /// after which the caller sends it and closes. Does nothing unless a verdict is awaited.
    ///
    /// A reason too long for a handshake message is [`HandshakeError::OutgoingTooLong`] (and
    /// the handshake stays awaiting its verdict).
    pub fn reject(&mut self, reason: &str) -> Result<(), HandshakeError> {
        if self.awaiting_verdict() {
            let msg = encode_json_message(&serde_json::json!({ "error": reason }))?;
            self.transmit.push_back(msg);
            self.state = State::Rejected;
        }
        Ok(())
    }

    fn gen1_frame(&self, message_type: u16, id: u32) -> Bytes {
        let mut out = BytesMut::new();
        // A u32 id always fits Gen 1 and the content is < 64 KiB: encoding cannot fail.
        let _ = encode_parts(
            Generation::Gen1,
            message_type,
            id,
            self.cfg.timestamp_ms,
            &self.own,
            &mut out,
        );
        out.freeze()
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The next bytes to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmit.pop_front()
    }

    /// True once the handshake succeeded (and everything to send has been taken).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done) && self.transmit.is_empty()
    }

    /// The version the peer announced (`v` in Gen 3, the HELLO/ACK version in Gen 1).
    pub fn peer_version(&self) -> Option<&str> {
        self.peer_version.as_deref()
    }

    /// Gen 3: the peer's hello object.
    pub fn peer_hello(&self) -> Option<&Map<String, Value>> {
        self.peer_hello.as_ref()
    }

    /// Feeds received bytes; returns how many belong to the handshake. When the handshake
    /// completes, the bytes after that count are the start of the frame stream.
    /// After an error the handshake is failed for good.
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, HandshakeError> {
        let r = self.feed_inner(input);
        if r.is_err() {
            self.state = State::Failed;
        }
        r
    }

    fn feed_inner(&mut self, input: &[u8]) -> Result<usize, HandshakeError> {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match &mut self.state {
                State::Done | State::G3ServerAwaitVerdict => return Ok(used),
                State::Failed | State::Rejected => return Err(HandshakeError::AlreadyFailed),
                State::G3ServerAwaitHello(r) => {
                    let (n, msg) = r.feed(rest)?;
                    used += n;
                    let Some(msg) = msg else { return Ok(used) };
                    self.check_pv(&msg)?;
                    self.accept_hello(msg);
                    if self.verdict {
                        self.state = State::G3ServerAwaitVerdict;
                        return Ok(used);
                    }
                    self.transmit.push_back(ack_message());
                    self.state = State::Done;
                }
                State::G3ClientAwaitHello(r) => {
                    let (n, msg) = r.feed(rest)?;
                    used += n;
                    let Some(msg) = msg else { return Ok(used) };
                    if let Some(reason) = msg.get("error") {
                        return Err(HandshakeError::ServerFull(error_reason(reason)));
                    }
                    self.check_pv(&msg)?;
                    self.accept_hello(msg);
                    self.transmit.push_back(self.own.clone());
                    self.state = State::G3ClientAwaitAck(JsonMessageReader::default());
                }
                State::G3ClientAwaitAck(r) => {
                    let (n, msg) = r.feed(rest)?;
                    used += n;
                    let Some(msg) = msg else { return Ok(used) };
                    if let Some(reason) = msg.get("error") {
                        return Err(HandshakeError::Rejected(error_reason(reason)));
                    }
                    if msg.get("result").and_then(Value::as_str) != Some("ok") {
                        return Err(HandshakeError::NotAcknowledged(
                            Value::Object(msg).to_string(),
                        ));
                    }
                    self.state = State::Done;
                }
                State::G1ServerAwaitAck { id, buf } => {
                    let expected = *id;
                    let Some((frame, n)) = gen1_handshake_frame(buf, rest)? else {
                        return Ok(input.len());
                    };
                    used += n;
                    if frame.request_id != expected || frame.message_type != HELLO_ACK.code() {
                        return Err(HandshakeError::UnexpectedFrame {
                            message_type: frame.message_type,
                            request_id: frame.request_id,
                        });
                    }
                    let version = gen1_version_from_payload(&frame.content)?;
                    if !gen1_version_compatible(&version) {
                        return Err(HandshakeError::IncompatibleVersion {
                            peer: version,
                            ours: self.cfg.version.clone(),
                        });
                    }
                    self.peer_version = Some(version);
                    self.state = State::Done;
                }
                State::G1ClientAwaitHello { buf } => {
                    let Some((frame, n)) = gen1_handshake_frame(buf, rest)? else {
                        return Ok(input.len());
                    };
                    used += n;
                    if frame.message_type != HELLO.code() {
                        return Err(HandshakeError::UnexpectedFrame {
                            message_type: frame.message_type,
                            request_id: frame.request_id,
                        });
                    }
                    let version = gen1_version_from_payload(&frame.content)?;
                    if !gen1_version_compatible(&version) {
                        return Err(HandshakeError::IncompatibleVersion {
                            peer: version,
                            ours: self.cfg.version.clone(),
                        });
                    }
                    self.peer_version = Some(version);
                    let ack = self.gen1_frame(HELLO_ACK.code(), frame.request_id);
                    self.transmit.push_back(ack);
                    self.state = State::Done;
                }
            }
        }
    }

    fn check_pv(&self, msg: &Map<String, Value>) -> Result<(), HandshakeError> {
        let pv = msg.get("pv").and_then(Value::as_str).unwrap_or("");
        if pv.is_empty() || !protocol_compatible(pv) {
            return Err(HandshakeError::IncompatibleVersion {
                peer: msg.get("pv").map(|v| v.to_string()).unwrap_or_default(),
                ours: PROTOCOL_VERSION.into(),
            });
        }
        Ok(())
    }

    fn accept_hello(&mut self, msg: Map<String, Value>) {
        self.peer_version = Some(match msg.get("v") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        });
        self.peer_hello = Some(msg);
    }
}

/// The reason of a refusal `{"error": REASON}`: the string itself, or any other JSON as text.
fn error_reason(reason: &Value) -> String {
    match reason {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Largest Gen 1 handshake frame we accept (header + u16 + 30 KiB of version string).
const MAX_GEN1_HANDSHAKE_FRAME: usize = GEN1_HEADER_LEN + 2 + MAX_HANDSHAKE_LEN;

/// Accumulates one Gen 1 frame from `buf` + `input`, consuming only its bytes.
/// Returns the frame and how many bytes of `input` it used.
fn gen1_handshake_frame(
    buf: &mut Vec<u8>,
    input: &[u8],
) -> Result<Option<(crate::Frame, usize)>, HandshakeError> {
    // Take only what can belong to this frame: first the header, then the declared size.
    let mut used = 0;
    loop {
        match parse_one(Generation::Gen1, buf, MAX_GEN1_HANDSHAKE_FRAME) {
            Ok(ParseOne::Frame { frame, len }) => {
                debug_assert_eq!(len, buf.len());
                buf.clear();
                return Ok(Some((frame, used)));
            }
            Ok(ParseOne::Incomplete(need)) => {
                if used == input.len() {
                    return Ok(None);
                }
                let take = (need - buf.len()).min(input.len() - used);
                buf.extend_from_slice(&input[used..used + take]);
                used += take;
            }
            Err(e) => {
                // 00 27 7b 22 ...: a Gen 3 JSON hello read as a Gen 1 header.
                if buf.get(2) == Some(&b'{') {
                    return Err(HandshakeError::WrongGeneration(Generation::Gen3));
                }
                return Err(HandshakeError::MalformedFrame(e));
            }
        }
    }
}

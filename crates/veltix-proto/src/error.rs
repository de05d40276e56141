//! The one error type of the protocol core.

use thiserror::Error;

/// Everything that can go wrong while turning meaning into bytes or bytes into meaning.
///
/// Stream-level rejections (bad magic, oversize, CRC mismatch, ...) are *not* errors: the
/// [`Decoder`](crate::Decoder) reports them as [`Rejection`](crate::Rejection) events so the
/// caller can count and log them and keep going or close the peer.
///
/// ```
/// use veltix_proto::{Error, Frame, Generation};
/// let frame = Frame::new(200, 70_000, &b"x"[..]);
/// // Gen 3 request ids are 16 bits wide.
/// assert!(matches!(frame.encode(Generation::Gen3), Err(Error::RequestIdOutOfRange { .. })));
/// ```
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The content does not fit the 32-bit size field.
    #[error("content of {len} bytes does not fit a frame (max 4 GiB - 1)")]
    ContentTooLarge {
        /// Length of the content that was offered.
        len: usize,
    },
    /// A request id that the generation cannot carry (Gen 3 ids are `u16`).
    #[error("request id {id} does not fit a {generation} frame")]
    RequestIdOutOfRange {
        /// The offending id.
        id: u32,
        /// The wire generation.
        generation: crate::Generation,
    },
    /// A message type code outside the range allowed for user types (`200..=65535`).
    #[error("message type code {code} is reserved (user codes are 200..=65535)")]
    ReservedTypeCode {
        /// The offending code.
        code: u16,
    },
    /// A message type code registered twice.
    #[error("message type code {code} is already registered (as {existing:?})")]
    DuplicateTypeCode {
        /// The offending code.
        code: u16,
        /// The name it is registered under.
        existing: String,
    },
    /// No free code left for automatic allocation (`200..=9999` all taken).
    #[error("no free message type code left in 200..=9999")]
    TypeCodesExhausted,
    /// Every request id of the allocator's window is still pending.
    #[error("all {window} request ids are pending")]
    IdsExhausted {
        /// Size of the id window.
        window: u32,
    },
    /// A request id that is already waiting for a reply.
    #[error("request id {id} is already pending")]
    DuplicatePending {
        /// The offending id.
        id: u32,
    },
    /// The handshake failed; the detail says why.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
}

/// Why a handshake failed.
///
/// ```
/// use veltix_proto::HandshakeError;
/// let e = HandshakeError::ServerFull("server_full".into());
/// assert_eq!(e.to_string(), "server refused the connection: server_full");
/// ```
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// A Gen 3 handshake message declared more than 30 KiB.
    #[error("handshake message of {len} bytes exceeds the 30720-byte limit")]
    TooLong {
        /// The declared length.
        len: usize,
    },
    /// The body was not valid JSON.
    #[error("handshake message is not valid JSON: {0}")]
    InvalidJson(String),
    /// Valid JSON, but not an object, or an empty object.
    #[error("handshake message is not a non-empty JSON object")]
    NotAnObject,
    /// The server rejected us (`{"error": ...}`), normally because it is full.
    #[error("server refused the connection: {0}")]
    ServerFull(String),
    /// The server refused us after reading our hello (`{"error": REASON}` in place of
    /// `{"result": "ok"}`), e.g. because our credentials were refused. Python 3.3.0 clients
    /// see this as a plain handshake failure.
    #[error("server rejected the connection: {0}")]
    Rejected(String),
    /// The peer announced a protocol version we cannot speak.
    #[error("incompatible protocol version {peer:?} (we speak {ours})")]
    IncompatibleVersion {
        /// What the peer announced (empty when missing).
        peer: String,
        /// What we speak.
        ours: String,
    },
    /// The server's final message was not `{"result": "ok"}`.
    #[error("server did not acknowledge the handshake: {0}")]
    NotAcknowledged(String),
    /// A Gen 1 frame other than the expected HELLO / HELLO_ACK arrived during the handshake.
    #[error(
        "unexpected frame during handshake: type {message_type}, request id {request_id:#010x}"
    )]
    UnexpectedFrame {
        /// Type code of the frame.
        message_type: u16,
        /// Its request id.
        request_id: u32,
    },
    /// A Gen 1 handshake frame that cannot be a HELLO/HELLO_ACK (too large, bad CRC, malformed).
    #[error("malformed handshake frame: {0}")]
    MalformedFrame(String),
    /// The peer speaks the other wire generation.
    #[error("peer speaks another Veltix wire generation: {0}")]
    WrongGeneration(String),
    /// The peer started a TLS handshake, and we do not speak TLS on this connection.
    #[error("the peer speaks TLS, and this end is configured for plaintext")]
    UnexpectedTls,
    /// The connection closed before the handshake completed.
    #[error("connection closed during the handshake")]
    Eof,
}

//! The one error type of the protocol core, with its nested detail enums.
//!
//! Every variant is matchable and carries typed detail; the only text inside an error is text the
//! *peer* sent (a refusal reason, a version string), never a description we formatted.

use thiserror::Error;

use crate::Generation;

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
        generation: Generation,
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
    /// A frame (header included) larger than the connection's `max_message_size`.
    #[error("a frame of {len} bytes exceeds max_message_size ({limit} bytes)")]
    FrameTooLarge {
        /// Header + content length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A [`Connection`](crate::Connection) was used after it closed.
    #[error("the connection is closed ({0})")]
    ConnectionClosed(crate::CloseReason),
    /// A single frame could not be parsed (see [`parse_one`](crate::parse_one)).
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
    /// A wire generation name could not be parsed.
    #[error(transparent)]
    ParseGeneration(#[from] ParseGenerationError),
    /// The handshake failed; the detail says why.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
}

/// Why one frame could not be parsed by [`parse_one`](crate::parse_one).
///
/// ```
/// use veltix_proto::{parse_one, FrameError, Generation};
/// let e = parse_one(Generation::Gen3, b"XX\0\0\0\0\0\0\0\0\0\0\0\0\0", 1024).unwrap_err();
/// assert_eq!(e, FrameError::BadMagic { found: *b"XX" });
/// assert_eq!(e.to_string(), "the frame does not start with the \"VX\" magic (found 58 58)");
/// ```
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A Gen 3 frame that does not start with `"VX"`.
    #[error("the frame does not start with the \"VX\" magic (found {:02x} {:02x})", found[0], found[1])]
    BadMagic {
        /// The first two bytes.
        found: [u8; 2],
    },
    /// The header declares a frame larger than the limit.
    #[error("the frame declares {declared} bytes, over the limit of {limit}")]
    TooLong {
        /// Declared total length (header + content).
        declared: u64,
        /// The limit.
        limit: usize,
    },
    /// The CRC in the header does not match the content.
    #[error(
        "CRC mismatch: the header says {expected:#010x}, the content hashes to {actual:#010x}"
    )]
    CrcMismatch {
        /// CRC in the header.
        expected: u32,
        /// CRC of the content.
        actual: u32,
    },
    /// A frame of a reserved (system) type where only user types are allowed.
    #[error("message type {message_type} is reserved and not allowed here")]
    ReservedType {
        /// The type code.
        message_type: u16,
    },
}

/// Why JSON bytes could not be read (see [`json::from_python_json_bytes`](crate::json::from_python_json_bytes)).
///
/// ```
/// use veltix_proto::json::from_python_json_bytes;
/// use veltix_proto::{JsonError, JsonSyntax};
/// let e = from_python_json_bytes(b"{\"a\": ").unwrap_err();
/// assert!(matches!(e, JsonError::Syntax { category: JsonSyntax::Eof, .. }));
/// ```
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonError {
    /// The bytes are not text in any encoding `json.loads` accepts.
    #[error("the JSON bytes are not valid text: {0}")]
    Encoding(#[from] TextEncoding),
    /// The text is not valid JSON.
    #[error("invalid JSON ({category}) at line {line}, column {column}")]
    Syntax {
        /// What kind of mistake.
        category: JsonSyntax,
        /// 1-based line of the mistake.
        line: usize,
        /// 1-based column of the mistake.
        column: usize,
    },
}

/// The kind of a JSON syntax error (mirrors `serde_json::error::Category`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonSyntax {
    /// Not syntactically valid JSON.
    Syntax,
    /// The text ended in the middle of a value.
    Eof,
    /// Valid syntax, unacceptable data (e.g. a number out of range).
    Data,
}

impl std::fmt::Display for JsonSyntax {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JsonSyntax::Syntax => "syntax error",
            JsonSyntax::Eof => "unexpected end of input",
            JsonSyntax::Data => "unacceptable value",
        })
    }
}

impl From<serde_json::Error> for JsonError {
    fn from(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        JsonError::Syntax {
            category: match e.classify() {
                Category::Eof => JsonSyntax::Eof,
                Category::Data => JsonSyntax::Data,
                Category::Syntax | Category::Io => JsonSyntax::Syntax,
            },
            line: e.line(),
            column: e.column(),
        }
    }
}

/// Why bytes are not text in the encoding they were detected as.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TextEncoding {
    /// UTF-8 with an invalid sequence.
    #[error("invalid UTF-8 after {valid_up_to} valid bytes")]
    InvalidUtf8 {
        /// Bytes that were valid before the error.
        valid_up_to: usize,
    },
    /// UTF-16 with an odd number of bytes.
    #[error("UTF-16 text of {len} bytes (an odd length)")]
    OddUtf16Length {
        /// The length.
        len: usize,
    },
    /// UTF-16 with an unpaired surrogate.
    #[error("UTF-16 text with an unpaired surrogate")]
    InvalidUtf16,
    /// UTF-32 whose length is not a multiple of 4.
    #[error("UTF-32 text of {len} bytes (not a multiple of 4)")]
    Utf32Length {
        /// The length.
        len: usize,
    },
    /// UTF-32 with a value that is not a Unicode scalar value.
    #[error("UTF-32 text with the invalid code point {code_point:#x}")]
    InvalidUtf32 {
        /// The value.
        code_point: u32,
    },
}

/// A wire generation name that is none of `gen1`, `1`, `1.6`, `gen3`, `3`, `3.3`.
///
/// ```
/// use veltix_proto::Generation;
/// let e = "gen2".parse::<Generation>().unwrap_err();
/// assert_eq!(e.to_string(), "unknown wire generation (expected gen1 or gen3)");
/// ```
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq, Default)]
#[error("unknown wire generation (expected gen1 or gen3)")]
pub struct ParseGenerationError;

/// Why the payload of a Gen 1 HELLO / HELLO_ACK is not a version string.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VersionPayloadError {
    /// The declared string length runs past the frame content.
    #[error("the version string does not fit the frame (it declares {declared} bytes, the frame holds {available})")]
    Truncated {
        /// Declared length.
        declared: usize,
        /// Bytes available after the length prefix.
        available: usize,
    },
    /// The version string is not UTF-8.
    #[error("the version string is not UTF-8")]
    NotUtf8,
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
    /// A handshake message we were asked to send is too long for the wire (a Gen 3 message
    /// over 30 KiB, which no peer accepts, or a Gen 1 version string over 65535 bytes).
    #[error("outgoing handshake message of {len} bytes exceeds the {limit}-byte limit")]
    OutgoingTooLong {
        /// Its length.
        len: usize,
        /// The limit it exceeds.
        limit: usize,
    },
    /// The body was not valid JSON.
    #[error("handshake message is not valid JSON: {0}")]
    InvalidJson(#[from] JsonError),
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
    /// The server's final message was not `{"result": "ok"}` (the peer's message, as JSON).
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
    /// A Gen 1 handshake frame that cannot be a HELLO/HELLO_ACK (too large, bad CRC).
    #[error("malformed handshake frame: {0}")]
    MalformedFrame(FrameError),
    /// A Gen 1 HELLO/HELLO_ACK whose payload is not a version string.
    #[error("malformed handshake version: {0}")]
    MalformedVersion(VersionPayloadError),
    /// The peer speaks the other wire generation (the one named).
    #[error("the peer speaks another Veltix wire generation ({0}); configure that generation")]
    WrongGeneration(Generation),
    /// The peer started a TLS handshake, and we do not speak TLS on this connection.
    #[error("the peer speaks TLS, and this end is configured for plaintext")]
    UnexpectedTls,
    /// The handshake was fed (or asked to refuse) after it failed or refused the peer.
    #[error("the handshake already failed")]
    AlreadyFailed,
    /// The connection closed before the handshake completed.
    #[error("connection closed during the handshake")]
    Eof,
}

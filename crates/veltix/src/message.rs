//! What users send ([`Request`]) and receive ([`Response`]).

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use veltix_proto::MessageType;

use crate::{Error, Result};

/// Anything that names a message type: a [`MessageType`] (by value or reference) or a raw code.
///
/// ```
/// use veltix::{MessageType, TypeCode};
/// const CHAT: MessageType = MessageType::new(200, "chat");
/// assert_eq!(CHAT.type_code(), 200);
/// assert_eq!((&CHAT).type_code(), 200);
/// assert_eq!(201u16.type_code(), 201);
/// ```
pub trait TypeCode {
    /// The wire code.
    fn type_code(&self) -> u16;
}
impl TypeCode for MessageType {
    fn type_code(&self) -> u16 {
        self.code()
    }
}
impl TypeCode for &MessageType {
    fn type_code(&self) -> u16 {
        self.code()
    }
}
impl TypeCode for u16 {
    fn type_code(&self) -> u16 {
        *self
    }
}

/// A message to send: type, content and an optional explicit request id.
///
/// Without an explicit id, the sender assigns one from its own range when it sends (Gen 3:
/// clients `0..32768`, servers `32768..`; Gen 1: random 32-bit), as Python does.
///
/// ```
/// use veltix::{MessageType, Request};
/// const CHAT: MessageType = MessageType::new(200, "chat");
/// let r = Request::text(&CHAT, "héllo");
/// assert_eq!(&r.content()[..], "héllo".as_bytes());
/// let j = Request::json(&CHAT, &serde_json::json!({"a": [1, 2]})).unwrap();
/// assert_eq!(&j.content()[..], br#"{"a": [1, 2]}"#); // byte-identical to Python's json.dumps
/// let r = Request::new(201u16, vec![1, 2, 3]).with_request_id(7);
/// assert_eq!(r.request_id(), Some(7));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    message_type: u16,
    content: Bytes,
    request_id: Option<u32>,
}

impl Request {
    /// Raw bytes.
    pub fn new(message_type: impl TypeCode, content: impl Into<Bytes>) -> Self {
        Request {
            message_type: message_type.type_code(),
            content: content.into(),
            request_id: None,
        }
    }

    /// UTF-8 text.
    pub fn text(message_type: impl TypeCode, text: &str) -> Self {
        Self::new(message_type, Bytes::copy_from_slice(text.as_bytes()))
    }

    /// JSON, serialized exactly as Python's `json.dumps` does (`", "`/`": "`, ASCII-escaped), so
    /// a Python peer's `Response.json` reads it and byte-level comparisons match.
    pub fn json<T: Serialize + ?Sized>(message_type: impl TypeCode, value: &T) -> Result<Self> {
        let body = veltix_proto::json::to_python_json(value, true)?;
        Ok(Self::new(message_type, body))
    }

    /// Sets an explicit request id.
    pub fn with_request_id(mut self, id: u32) -> Self {
        self.request_id = Some(id);
        self
    }

    /// Makes this request the reply to `to`: it copies `to`'s request id, so the peer's
    /// `send_and_wait` receives it (Python's `Request.respond`).
    ///
    /// ```
    /// # use veltix::{Request, Response};
    /// # fn reply(msg: &Response) -> Request {
    /// Request::text(msg.message_type(), "pong").respond(msg)
    /// # }
    /// ```
    pub fn respond(mut self, to: &Response) -> Self {
        self.request_id = Some(to.request_id());
        self
    }

    /// The type code.
    pub fn message_type(&self) -> u16 {
        self.message_type
    }

    /// The content.
    pub fn content(&self) -> &Bytes {
        &self.content
    }

    /// The explicit request id, if any.
    pub fn request_id(&self) -> Option<u32> {
        self.request_id
    }
}

/// A received message.
///
/// ```
/// use veltix::Response;
/// let r = Response::new(200, 3, &br#"{"x": 1}"#[..]);
/// assert!(r.is_text() && r.is_json());
/// let v: serde_json::Value = r.json().unwrap();
/// assert_eq!(v["x"], 1);
/// assert!(Response::new(200, 0, vec![0xff]).text().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    message_type: u16,
    request_id: u32,
    content: Bytes,
}

impl Response {
    /// Builds a response (mostly useful in tests).
    pub fn new(message_type: u16, request_id: u32, content: impl Into<Bytes>) -> Self {
        Response {
            message_type,
            request_id,
            content: content.into(),
        }
    }

    pub(crate) fn from_frame(f: veltix_proto::Frame) -> Self {
        Response {
            message_type: f.message_type,
            request_id: f.request_id,
            content: f.content,
        }
    }

    /// The type code.
    pub fn message_type(&self) -> u16 {
        self.message_type
    }

    /// True if this message has type `t`.
    pub fn is(&self, t: impl TypeCode) -> bool {
        self.message_type == t.type_code()
    }

    /// The request id (copy it with [`Request::respond`] to answer).
    pub fn request_id(&self) -> u32 {
        self.request_id
    }

    /// The raw content (zero-copy).
    pub fn content(&self) -> &Bytes {
        &self.content
    }

    /// Consumes the response, returning its content.
    pub fn into_content(self) -> Bytes {
        self.content
    }

    /// The content as UTF-8 text.
    pub fn text(&self) -> Result<&str> {
        std::str::from_utf8(&self.content).map_err(|e| Error::InvalidContent(e.to_string()))
    }

    /// The content parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.content).map_err(|e| Error::InvalidContent(e.to_string()))
    }

    /// True if the content is valid UTF-8. Never fails.
    pub fn is_text(&self) -> bool {
        self.text().is_ok()
    }

    /// True if the content is valid JSON. Never fails.
    pub fn is_json(&self) -> bool {
        serde_json::from_slice::<serde::de::IgnoredAny>(&self.content).is_ok()
    }
}

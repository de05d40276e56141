//! # veltix-proto: the Veltix wire protocol, without I/O
//!
//! Everything that turns bytes into meaning and back for both wire generations of Python Veltix,
//! with no sockets, no threads, no async runtime and no clock of its own (time is passed in).
//! In the spirit of `quinn-proto` and `rustls`: the runtime crate `veltix` drives it over tokio,
//! tests drive it from byte vectors captured from the real Python code.
//!
//! | Generation | Python Veltix | Header | Handshake |
//! |---|---|---|---|
//! | [`Generation::Gen3`] (default) | 2.x, 3.x (protocol `"1.0"`) | 15 bytes, `"VX"` magic | 3 raw length-prefixed JSON messages |
//! | [`Generation::Gen1`] | 1.6.2 – 1.6.9 | 22 bytes, timestamp | framed HELLO / HELLO_ACK |
//!
//! ## Layout
//! - [`frame`]: header layouts, [`Frame`], encoding ([`encode_parts`]) and the single-frame
//!   parser used by the Gen 1 handshake.
//! - [`decoder`]: the streaming [`Decoder`]: bytes in any pieces in, [`Decoded`] frames and typed
//!   [`Rejection`]s out, with [`DecoderStats`] counters. It reproduces Python's resynchronisation
//!   rules; the runtime decides what to do with an abusive peer.
//! - [`handshake`]: the [`Handshake`] state machine for both roles and generations, plus the exact
//!   Python handshake messages. It never consumes bytes past its end.
//! - [`types`]: [`MessageType`], the system types ([`PING`], [`PONG`], Gen 1's HELLO...), the
//!   reserved range, and [`TypeRegistry`] reproducing Python's auto-allocation.
//! - [`ids`]: [`IdAllocator`] (Gen 3 counters with the client/server split, Gen 1 random ids) and
//!   [`PendingTable`], a table of waiters with deadlines driven by a caller-supplied clock.
//! - [`rules`]: the per-frame rules of an established link as pure functions:
//!   [`check_outgoing`] (reserved codes other than the generation's system types, frames over
//!   `max_message_size`) and [`classify`] (a received frame is a PING to answer, a reserved
//!   code, the reply of a waiter, a stray PONG, or a message).
//! - [`keepalive`]: the [`KeepAlive`] policy and [`KeepAliveTimer`], its sans-I/O state
//!   machine (receive times and `now` in, [`KeepAliveAction`] and the next deadline out).
//! - [`connection`]: the sans-I/O [`Connection`] of an established link: bytes and the current
//!   time in; [`Event`]s (frames for the handlers, replies matched to their requests, request
//!   timeouts, the [`CloseReason`]), bytes to write and the next timer deadline out. Built on
//!   [`rules`], [`keepalive`] and [`PendingTable`]; request deadlines run on the caller's clock.
//!
//! The `veltix` runtime does not run a [`Connection`] behind a lock (that would serialise its
//! fast paths: inline writes, waiters reading their own reply, handler batches). Its engine
//! calls the same pieces instead: [`check_outgoing`] on every send, [`classify`] on every
//! decoded frame, a [`KeepAliveTimer`] and the [`PendingTable`]'s deadlines in one timer task
//! per connection. So each rule lives here once, tested with a simulated clock; only what to do
//! with a reserved code differs (`Connection` closes, the runtime drops it like Python).
//! - [`json`]: JSON written byte-for-byte like Python's `json.dumps`, and read like `json.loads`.
//! - [`Error`]: the one error type, with nested typed detail ([`HandshakeError`], [`FrameError`],
//!   [`JsonError`], [`TextEncoding`], [`ParseGenerationError`], [`VersionPayloadError`]); no
//!   variant carries a formatted message.
//!
//! ## Deliberate differences from Python Veltix
//! - Every rejected frame is *reported* ([`Rejection`]); Python only logs. The runtime closes the
//!   connection of a peer that sends one (Python keeps it open and resynchronises forever).
//! - Python 3.3.0 clears its buffer when it would exceed 20 MiB; this decoder never holds more
//!   than one frame of at most `max_message_size` plus what was fed since the last `decode`, so
//!   no such cap is needed, and limits above 20 MiB work.
//! - The JSON reader rejects `NaN`/`Infinity` and non-ASCII digits in `pv`, which Python's
//!   `json.loads`/`int()` accept; no Veltix peer produces them.
//!
//! ```
//! use veltix_proto::{Decoded, Decoder, DecoderConfig, Frame, Generation};
//! let wire = Frame::new(200, 5, &b"hello"[..]).encode(Generation::Gen3)?;
//! assert_eq!(hex(&wire), "56580000c8000000053610a686000568656c6c6f"); // PROTOCOL.md §B.9
//! let mut dec = Decoder::new(DecoderConfig::new(Generation::Gen3));
//! dec.feed(&wire);
//! assert!(matches!(dec.decode(), Some(Decoded::Frame(f)) if f.request_id == 5));
//! # fn hex(b: &[u8]) -> String { b.iter().map(|x| format!("{x:02x}")).collect() }
//! # Ok::<(), veltix_proto::Error>(())
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod connection;
pub mod decoder;
mod error;
pub mod frame;
pub mod handshake;
pub mod ids;
pub mod json;
pub mod keepalive;
pub mod rules;
pub mod types;

pub use connection::{CloseReason, Connection, ConnectionConfig, ConnectionStats, Event};
pub use decoder::{Decoded, Decoder, DecoderConfig, DecoderStats, Rejection};
pub use error::{
    Error, FrameError, HandshakeError, JsonError, JsonSyntax, ParseGenerationError, TextEncoding,
    VersionPayloadError,
};
pub use frame::{
    encode_parts, has_magic, parse_one, Frame, Generation, Header, ParseOne,
    DEFAULT_MAX_MESSAGE_SIZE, GEN1_HEADER_LEN, GEN3_HEADER_LEN, MAGIC,
};
pub use handshake::{Handshake, HandshakeConfig, Role};
pub use ids::{IdAllocator, PendingTable};
pub use keepalive::{earliest, KeepAlive, KeepAliveAction, KeepAliveTimer};
pub use rules::{check_outgoing, classify, Inbound};
pub use types::{
    system_types, MessageType, TypeRegistry, TypeSet, ERROR, HEARTBEAT, HELLO, HELLO_ACK,
    INVALID_REQUEST, PING, PONG,
};

//! The streaming frame decoder: bytes in arbitrary pieces in, frames and typed rejections out.

use bytes::{Buf, BytesMut};

use crate::frame::{has_magic, Generation, Header, MAGIC};
use crate::types::TypeSet;
use crate::Frame;

/// Settings of a [`Decoder`].
///
/// ```
/// use veltix_proto::{DecoderConfig, Generation};
/// let cfg = DecoderConfig { max_message_size: 1024, ..DecoderConfig::new(Generation::Gen3) };
/// assert_eq!(cfg.max_message_size, 1024);
/// ```
#[derive(Clone, Debug)]
pub struct DecoderConfig {
    /// Which wire generation to decode.
    pub generation: Generation,
    /// Largest accepted frame, header included (Python's `max_message_size`, 10 MiB by default).
    pub max_message_size: usize,
    /// If set, frames whose type code is not in the set are dropped (as the Python receiver
    /// drops types that are not registered in its process). `None` accepts every code.
    pub known_types: Option<TypeSet>,
}

impl DecoderConfig {
    /// Default settings for a generation: 10 MiB limit, every type code accepted.
    pub fn new(generation: Generation) -> Self {
        DecoderConfig {
            generation,
            max_message_size: crate::DEFAULT_MAX_MESSAGE_SIZE,
            known_types: None,
        }
    }
}

/// A frame the decoder refused, with enough detail to log it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// Gen 3: the buffer did not start with `"VX"`; `discarded` bytes were skipped to resync.
    BadMagic {
        /// Bytes thrown away.
        discarded: usize,
    },
    /// A header declared a frame larger than `max_message_size`.
    Oversize {
        /// Declared total length (header + content).
        declared: u64,
        /// The configured limit.
        limit: usize,
        /// Bytes thrown away (Gen 3: up to the next `"VX"`; Gen 1: the whole buffer).
        discarded: usize,
    },
    /// The CRC in the header does not match the content.
    CrcMismatch {
        /// Type code of the frame.
        message_type: u16,
        /// Its request id.
        request_id: u32,
        /// CRC in the header.
        expected: u32,
        /// CRC of the content.
        actual: u32,
    },
    /// A well-formed frame whose type code is not in [`DecoderConfig::known_types`].
    UnknownType {
        /// The unknown code.
        message_type: u16,
        /// Its request id.
        request_id: u32,
        /// Content length.
        size: u32,
    },
    /// The stream ended (EOF) in the middle of a frame.
    Truncated {
        /// Bytes that were buffered.
        buffered: usize,
    },
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::BadMagic { discarded } => {
                write!(f, "bad magic: skipped {discarded} bytes to resynchronise")
            }
            Rejection::Oversize {
                declared, limit, ..
            } => write!(
                f,
                "frame declares {declared} bytes, over max_message_size {limit}"
            ),
            Rejection::CrcMismatch {
                message_type,
                request_id,
                expected,
                actual,
            } => write!(
                f,
                "CRC mismatch on type {message_type} id {request_id}: header {expected:#010x}, content {actual:#010x}"
            ),
            Rejection::UnknownType {
                message_type,
                request_id,
                size,
            } => write!(
                f,
                "unknown message type {message_type} (id {request_id}, {size} bytes) dropped"
            ),
            Rejection::Truncated { buffered } => {
                write!(f, "stream ended inside a frame ({buffered} bytes buffered)")
            }
        }
    }
}

/// What [`Decoder::decode`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A valid frame.
    Frame(Frame),
    /// A refused frame or skipped garbage.
    Rejected(Rejection),
}

/// Counters of everything a decoder has seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecoderStats {
    /// Valid frames produced.
    pub frames: u64,
    /// Bytes fed in.
    pub bytes_in: u64,
    /// Bad-magic resynchronisations (Gen 3).
    pub bad_magic: u64,
    /// Oversize headers.
    pub oversize: u64,
    /// CRC mismatches.
    pub crc_mismatch: u64,
    /// Frames with unknown type codes.
    pub unknown_type: u64,
    /// Truncated frames at EOF.
    pub truncated: u64,
    /// Bytes thrown away by any rejection.
    pub discarded_bytes: u64,
    /// Content bytes hashed by CRC checks (valid frames and mismatches alike). Always at most
    /// [`Decoder::MAX_HASH_FACTOR`] × `bytes_in` + [`Decoder::HASH_ALLOWANCE`]: resync work is
    /// linear in the input, whatever the input.
    pub hashed_bytes: u64,
    /// CRC mismatches after which the whole declared frame was skipped instead of resyncing
    /// one byte further (see [`Decoder`]: the resync budget was spent).
    pub skipped_frames: u64,
}

impl DecoderStats {
    /// Total number of rejections of any kind.
    pub fn rejections(&self) -> u64 {
        self.bad_magic + self.oversize + self.crc_mismatch + self.unknown_type + self.truncated
    }
}

/// Turns a byte stream into frames. Feed it bytes in any pieces, then call
/// [`decode`](Decoder::decode) until it returns `None`.
///
/// Memory: the buffer only ever holds bytes that arrived; a declared length is never used to
/// allocate more than `max_message_size`.
///
/// Gen 3 reproduces Python Veltix 3.3.0's `MessageBuffer` (resync on `"VX"` from offset 1 after a
/// bad magic, an oversize header or a CRC mismatch; an unknown type drops the whole frame).
/// Gen 1 reproduces 1.6.9 (an oversize header clears the whole buffer; a bad CRC or unknown type
/// drops the frame). Unlike Python, every rejection is reported to the caller.
///
/// Linear time on any input: resyncing after a CRC mismatch re-examines the bytes of the bad
/// frame, and crafted input (a `"VX"` header every few bytes, each declaring a large frame
/// with a wrong CRC) would make Python's rule hash the same bytes over and over: quadratic.
/// The decoder keeps Python's rule while the bytes hashed for mismatching frames stay within
/// `bytes_in` + [`Decoder::HASH_ALLOWANCE`]; beyond that budget a mismatching Gen 3 frame is
/// skipped whole (as Gen 1 does), which pays for its hashing with the bytes it discards. So
/// [`DecoderStats::hashed_bytes`] never exceeds [`Decoder::MAX_HASH_FACTOR`] × `bytes_in` +
/// [`Decoder::HASH_ALLOWANCE`]. Honest peers never send a bad CRC, so this changes nothing for
/// them.
///
/// ```
/// use veltix_proto::{Decoded, Decoder, DecoderConfig, Frame, Generation};
/// let wire = Frame::new(200, 1, &b"one"[..]).encode(Generation::Gen3).unwrap();
/// let mut dec = Decoder::new(DecoderConfig::new(Generation::Gen3));
/// for byte in wire.iter() {
///     dec.feed(&[*byte]); // one byte at a time is fine
/// }
/// match dec.decode() {
///     Some(Decoded::Frame(f)) => assert_eq!(&f.content[..], b"one"),
///     other => panic!("{other:?}"),
/// }
/// assert!(dec.decode().is_none());
/// ```
#[derive(Debug)]
pub struct Decoder {
    config: DecoderConfig,
    buf: BytesMut,
    stats: DecoderStats,
    /// Content bytes hashed for mismatching frames that were then resynced (not skipped).
    wasted: u64,
}

impl Decoder {
    /// Bytes of mismatching frames the decoder may hash beyond `bytes_in` before it stops
    /// resyncing inside them (see [`Decoder`]).
    pub const HASH_ALLOWANCE: u64 = 64 * 1024;

    /// Bound on [`DecoderStats::hashed_bytes`] per input byte (plus [`Decoder::HASH_ALLOWANCE`]):
    /// hashed bytes are those of valid frames and of mismatches skipped whole (disjoint parts
    /// of the input, so at most `bytes_in` together) and those of mismatches resynced within
    /// the budget (at most `bytes_in` + the allowance).
    pub const MAX_HASH_FACTOR: u64 = 2;

    /// A decoder with an empty buffer.
    pub fn new(config: DecoderConfig) -> Self {
        Decoder {
            config,
            buf: BytesMut::new(),
            stats: DecoderStats::default(),
            wasted: 0,
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> &DecoderStats {
        &self.stats
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        self.stats.bytes_in += data.len() as u64;
        self.buf.extend_from_slice(data);
    }

    /// Direct access to the receive buffer, for reading from a socket without an extra copy.
    /// Bytes appended here must be reported with [`Decoder::note_received`] for the statistics.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Records that `n` bytes were appended through [`Decoder::buffer_mut`].
    pub fn note_received(&mut self, n: usize) {
        self.stats.bytes_in += n as u64;
    }

    /// Produces the next frame or rejection, or `None` when more bytes are needed.
    pub fn decode(&mut self) -> Option<Decoded> {
        match self.config.generation {
            Generation::Gen3 => self.decode_gen3(),
            Generation::Gen1 => self.decode_gen1(),
        }
    }

    /// Call at end of stream: reports a partial frame left in the buffer, and clears it.
    pub fn finish(&mut self) -> Option<Rejection> {
        if self.buf.is_empty() {
            return None;
        }
        let buffered = self.buf.len();
        self.discard(buffered);
        self.stats.truncated += 1;
        Some(Rejection::Truncated { buffered })
    }

    fn discard(&mut self, n: usize) {
        self.buf.advance(n);
        self.stats.discarded_bytes += n as u64;
    }

    /// Drops bytes up to the next `"VX"` found at offset >= 1, or everything if there is none.
    fn resync(&mut self) -> usize {
        let n = self.buf[1..]
            .windows(2)
            .position(|w| w == MAGIC)
            .map_or(self.buf.len(), |i| i + 1);
        self.discard(n);
        n
    }

    /// CRC of the content of the frame at the front of the buffer.
    fn crc(&mut self, hlen: usize, total: usize) -> u32 {
        self.stats.hashed_bytes += (total - hlen) as u64;
        crc32fast::hash(&self.buf[hlen..total])
    }

    fn is_known(&self, code: u16) -> bool {
        self.config
            .known_types
            .as_ref()
            .is_none_or(|set| set.contains(code))
    }

    fn decode_gen3(&mut self) -> Option<Decoded> {
        let hlen = Generation::Gen3.header_len();
        let header = Header::parse(Generation::Gen3, &self.buf)?;
        if !has_magic(&self.buf) {
            let discarded = self.resync();
            self.stats.bad_magic += 1;
            return Some(Decoded::Rejected(Rejection::BadMagic { discarded }));
        }
        let declared = header.frame_len(Generation::Gen3);
        let limit = self.config.max_message_size;
        if declared > limit as u64 {
            let discarded = self.resync();
            self.stats.oversize += 1;
            return Some(Decoded::Rejected(Rejection::Oversize {
                declared,
                limit,
                discarded,
            }));
        }
        let total = declared as usize;
        if self.buf.len() < total {
            self.reserve_towards(total);
            return None;
        }
        if !self.is_known(header.message_type) {
            self.discard(total);
            self.stats.unknown_type += 1;
            return Some(Decoded::Rejected(Rejection::UnknownType {
                message_type: header.message_type,
                request_id: header.request_id,
                size: header.size,
            }));
        }
        let actual = self.crc(hlen, total);
        if actual != header.crc {
            self.wasted += (total - hlen) as u64;
            if self.wasted <= self.stats.bytes_in + Self::HASH_ALLOWANCE {
                self.resync();
            } else {
                // Out of budget: skip the frame whole, as Gen 1 does (see `Decoder`).
                self.wasted -= (total - hlen) as u64;
                self.discard(total);
                self.stats.skipped_frames += 1;
            }
            self.stats.crc_mismatch += 1;
            return Some(Decoded::Rejected(Rejection::CrcMismatch {
                message_type: header.message_type,
                request_id: header.request_id,
                expected: header.crc,
                actual,
            }));
        }
        Some(Decoded::Frame(self.take_frame(header, total)))
    }

    fn decode_gen1(&mut self) -> Option<Decoded> {
        let hlen = Generation::Gen1.header_len();
        let header = Header::parse(Generation::Gen1, &self.buf)?;
        let declared = header.frame_len(Generation::Gen1);
        let limit = self.config.max_message_size;
        if declared > limit as u64 {
            // 1.6.9 has no magic to resync on: it clears everything it holds.
            let discarded = self.buf.len();
            self.discard(discarded);
            self.stats.oversize += 1;
            return Some(Decoded::Rejected(Rejection::Oversize {
                declared,
                limit,
                discarded,
            }));
        }
        let total = declared as usize;
        if self.buf.len() < total {
            self.reserve_towards(total);
            return None;
        }
        let actual = self.crc(hlen, total);
        if actual != header.crc {
            self.discard(total);
            self.stats.crc_mismatch += 1;
            return Some(Decoded::Rejected(Rejection::CrcMismatch {
                message_type: header.message_type,
                request_id: header.request_id,
                expected: header.crc,
                actual,
            }));
        }
        if !self.is_known(header.message_type) {
            self.discard(total);
            self.stats.unknown_type += 1;
            return Some(Decoded::Rejected(Rejection::UnknownType {
                message_type: header.message_type,
                request_id: header.request_id,
                size: header.size,
            }));
        }
        Some(Decoded::Frame(self.take_frame(header, total)))
    }

    /// Grows the buffer towards a declared frame length, at most 64 KiB ahead of what arrived:
    /// a 15-byte header alone must not make us allocate its (up to `max_message_size`) body.
    /// Growth beyond that is amortised by `BytesMut`'s doubling as bytes actually arrive.
    fn reserve_towards(&mut self, total: usize) {
        const AHEAD: usize = 64 * 1024;
        self.buf.reserve((total - self.buf.len()).min(AHEAD));
    }

    fn take_frame(&mut self, header: Header, total: usize) -> Frame {
        let hlen = self.config.generation.header_len();
        let mut raw = self.buf.split_to(total);
        raw.advance(hlen);
        self.stats.frames += 1;
        Frame {
            message_type: header.message_type,
            request_id: header.request_id,
            flags: header.flags,
            timestamp_ms: header.timestamp_ms,
            content: raw.freeze(),
        }
    }
}

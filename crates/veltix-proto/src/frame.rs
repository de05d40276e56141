//! Frames of both wire generations: layout, encoding and single-frame parsing.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{Error, FrameError, ParseGenerationError};

/// The two-byte magic that opens every Gen 3 frame.
pub const MAGIC: [u8; 2] = *b"VX";
/// Gen 3 header length: `"VX"`, flags u8, type u16, size u32, crc u32, id u16.
pub const GEN3_HEADER_LEN: usize = 15;
/// Gen 1 header length: type u16, size u32, crc u32, timestamp u64, id 4 bytes.
pub const GEN1_HEADER_LEN: usize = 22;
/// Default `max_message_size` of Python Veltix (header + content): 10 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 10 * 1024 * 1024;

/// Which Veltix wire generation a connection speaks.
///
/// ```
/// use veltix_proto::Generation;
/// assert_eq!(Generation::default(), Generation::Gen3);
/// assert_eq!(Generation::Gen1.header_len(), 22);
/// assert_eq!("gen1".parse::<Generation>().unwrap(), Generation::Gen1);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Generation {
    /// Python Veltix 1.6.2 – 1.6.9: 22-byte header, framed HELLO / HELLO_ACK handshake.
    Gen1,
    /// Python Veltix 2.x / 3.x (protocol `"1.0"`): 15-byte `"VX"` header, JSON handshake.
    #[default]
    Gen3,
}

impl Generation {
    /// Length of the frame header in bytes.
    pub const fn header_len(self) -> usize {
        match self {
            Generation::Gen1 => GEN1_HEADER_LEN,
            Generation::Gen3 => GEN3_HEADER_LEN,
        }
    }

    /// Largest request id a frame of this generation can carry.
    pub const fn max_request_id(self) -> u32 {
        match self {
            Generation::Gen1 => u32::MAX,
            Generation::Gen3 => u16::MAX as u32,
        }
    }
}

impl std::fmt::Display for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Generation::Gen1 => "gen1",
            Generation::Gen3 => "gen3",
        })
    }
}

impl std::str::FromStr for Generation {
    type Err = ParseGenerationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "gen1" | "1" | "1.6" => Ok(Generation::Gen1),
            "gen3" | "3" | "3.3" => Ok(Generation::Gen3),
            _ => Err(ParseGenerationError),
        }
    }
}

/// A frame header as it appears on the wire (fields of the other generation are zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    /// Message type code.
    pub message_type: u16,
    /// Content length in bytes.
    pub size: u32,
    /// zlib CRC-32 of the content.
    pub crc: u32,
    /// Request (correlation) id: `u16` in Gen 3, 4 opaque bytes read big-endian in Gen 1.
    pub request_id: u32,
    /// Gen 3 flags byte (sent as 0, never validated).
    pub flags: u8,
    /// Gen 1 sender timestamp in milliseconds (opaque).
    pub timestamp_ms: u64,
}

impl Header {
    /// Reads a header from the first `generation.header_len()` bytes of `bytes`.
    ///
    /// Returns `None` when fewer bytes are given. For Gen 3 the magic is *not* checked here;
    /// use [`has_magic`] first.
    ///
    /// ```
    /// use veltix_proto::{Generation, Header};
    /// let bytes = hex_bytes("56580000c8000000053610a6860005");
    /// let h = Header::parse(Generation::Gen3, &bytes).unwrap();
    /// assert_eq!((h.message_type, h.size, h.request_id), (200, 5, 5));
    /// # fn hex_bytes(s: &str) -> Vec<u8> { (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect() }
    /// ```
    pub fn parse(generation: Generation, bytes: &[u8]) -> Option<Header> {
        let h = bytes.get(..generation.header_len())?;
        let be16 = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        let be32 = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        Some(match generation {
            Generation::Gen3 => Header {
                flags: h[2],
                message_type: be16(3),
                size: be32(5),
                crc: be32(9),
                request_id: u32::from(be16(13)),
                timestamp_ms: 0,
            },
            Generation::Gen1 => Header {
                message_type: be16(0),
                size: be32(2),
                crc: be32(6),
                timestamp_ms: (u64::from(be32(10)) << 32) | u64::from(be32(14)),
                request_id: be32(18),
                flags: 0,
            },
        })
    }

    /// Total frame length (header + content) this header declares.
    pub fn frame_len(&self, generation: Generation) -> u64 {
        generation.header_len() as u64 + u64::from(self.size)
    }
}

/// True if `bytes` starts with the Gen 3 magic `"VX"`.
pub fn has_magic(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[..2] == MAGIC
}

/// One Veltix message: type, request id and content, plus the per-generation header extras.
///
/// ```
/// use veltix_proto::{Frame, Generation};
/// let frame = Frame::new(200, 5, &b"hello"[..]);
/// let wire = frame.encode(Generation::Gen3).unwrap();
/// assert_eq!(&wire[..2], b"VX");
/// assert_eq!(wire.len(), 15 + 5);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Frame {
    /// Message type code.
    pub message_type: u16,
    /// Request (correlation) id. Gen 3 carries 16 bits, Gen 1 32 bits.
    pub request_id: u32,
    /// Gen 3 flags byte; 0 on everything we send, accepted as anything on receive.
    pub flags: u8,
    /// Gen 1 sender timestamp in milliseconds (opaque); ignored by Gen 3.
    pub timestamp_ms: u64,
    /// The payload.
    pub content: Bytes,
}

impl Frame {
    /// A frame with flags 0 and timestamp 0.
    pub fn new(message_type: u16, request_id: u32, content: impl Into<Bytes>) -> Frame {
        Frame {
            message_type,
            request_id,
            flags: 0,
            timestamp_ms: 0,
            content: content.into(),
        }
    }

    /// Encoded length in bytes.
    pub fn encoded_len(&self, generation: Generation) -> usize {
        generation.header_len() + self.content.len()
    }

    /// Encodes into a new buffer.
    pub fn encode(&self, generation: Generation) -> Result<Bytes, Error> {
        let mut out = BytesMut::with_capacity(self.encoded_len(generation));
        self.encode_into(generation, &mut out)?;
        Ok(out.freeze())
    }

    /// Appends the encoded frame to `out`.
    pub fn encode_into(&self, generation: Generation, out: &mut BytesMut) -> Result<(), Error> {
        let extra = match generation {
            Generation::Gen3 => u64::from(self.flags),
            Generation::Gen1 => self.timestamp_ms,
        };
        encode_parts(
            generation,
            self.message_type,
            self.request_id,
            extra,
            &self.content,
            out,
        )
    }
}

/// Appends one frame built from its parts to `out`, without building a [`Frame`] first.
///
/// `extra` is the flags byte for Gen 3 (only the low 8 bits are used) and the timestamp for Gen 1.
/// On error nothing is written.
///
/// ```
/// use bytes::BytesMut;
/// use veltix_proto::{encode_parts, Generation};
/// let mut out = BytesMut::new();
/// encode_parts(Generation::Gen3, 0, 0, 0, b"", &mut out).unwrap();
/// assert_eq!(&out[..], b"VX\0\0\0\0\0\0\0\0\0\0\0\0\0"); // a PING with id 0
/// ```
pub fn encode_parts(
    generation: Generation,
    message_type: u16,
    request_id: u32,
    extra: u64,
    content: &[u8],
    out: &mut BytesMut,
) -> Result<(), Error> {
    let size =
        u32::try_from(content.len()).map_err(|_| Error::ContentTooLarge { len: content.len() })?;
    if request_id > generation.max_request_id() {
        return Err(Error::RequestIdOutOfRange {
            id: request_id,
            generation,
        });
    }
    let crc = crc32fast::hash(content);
    out.reserve(generation.header_len() + content.len());
    match generation {
        Generation::Gen3 => {
            out.put_slice(&MAGIC);
            out.put_u8(extra as u8);
            out.put_u16(message_type);
            out.put_u32(size);
            out.put_u32(crc);
            out.put_u16(request_id as u16);
        }
        Generation::Gen1 => {
            out.put_u16(message_type);
            out.put_u32(size);
            out.put_u32(crc);
            out.put_u64(extra);
            out.put_u32(request_id);
        }
    }
    out.put_slice(content);
    Ok(())
}

/// Outcome of [`parse_one`] on a byte slice that starts with a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseOne {
    /// More bytes are needed; at least this many in total.
    Incomplete(usize),
    /// A whole frame of `len` bytes; the CRC has been checked.
    Frame {
        /// The frame.
        frame: Frame,
        /// How many bytes it occupied.
        len: usize,
    },
}

/// Parses exactly one frame at the start of `bytes` without consuming anything after it.
///
/// This is the "no over-read" primitive used by the Gen 1 handshake.
///
/// ```
/// use veltix_proto::{parse_one, Frame, FrameError, Generation, ParseOne};
/// let mut wire = Frame::new(200, 1, &b"hi"[..]).encode(Generation::Gen3).unwrap().to_vec();
/// assert_eq!(parse_one(Generation::Gen3, &wire[..4], 1024), Ok(ParseOne::Incomplete(15)));
/// assert!(matches!(parse_one(Generation::Gen3, &wire, 1024), Ok(ParseOne::Frame { len: 17, .. })));
/// wire[16] ^= 1;
/// assert!(matches!(parse_one(Generation::Gen3, &wire, 1024), Err(FrameError::CrcMismatch { .. })));
/// ```
pub fn parse_one(
    generation: Generation,
    bytes: &[u8],
    max_message_size: usize,
) -> Result<ParseOne, FrameError> {
    let hlen = generation.header_len();
    let Some(header) = Header::parse(generation, bytes) else {
        return Ok(ParseOne::Incomplete(hlen));
    };
    if generation == Generation::Gen3 && !has_magic(bytes) {
        return Err(FrameError::BadMagic {
            found: [bytes[0], bytes[1]],
        });
    }
    let total = header.frame_len(generation);
    if total > max_message_size as u64 {
        return Err(FrameError::TooLong {
            declared: total,
            limit: max_message_size,
        });
    }
    let total = total as usize;
    if bytes.len() < total {
        return Ok(ParseOne::Incomplete(total));
    }
    let content = &bytes[hlen..total];
    let crc = crc32fast::hash(content);
    if crc != header.crc {
        return Err(FrameError::CrcMismatch {
            expected: header.crc,
            actual: crc,
        });
    }
    Ok(ParseOne::Frame {
        frame: Frame {
            message_type: header.message_type,
            request_id: header.request_id,
            flags: header.flags,
            timestamp_ms: header.timestamp_ms,
            content: Bytes::copy_from_slice(content),
        },
        len: total,
    })
}

//! Feeds arbitrary bytes, in arbitrary pieces, to the stream `Decoder` of both generations and
//! checks its invariants after every step.
//!
//! Input layout: `[mode, limit, seed, ...stream]`.
//! * `mode` bit 0: generation (0 = Gen 3, 1 = Gen 1); bit 1: small `max_message_size`
//!   (`limit`, 0..=255 — possibly below the header length) instead of the 10 MiB default;
//!   bit 2: restrict `known_types` to a few codes; bit 3: feed several pieces before decoding;
//!   bit 4: "structured" mode, the stream is turned into valid frames which must all come back.
//! * `seed` drives the piece sizes (1..=64 bytes, or 1-byte pieces when `seed == 0`).

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use veltix_proto::{
    encode_parts, Decoded, Decoder, DecoderConfig, Frame, Generation, Rejection, TypeSet,
    DEFAULT_MAX_MESSAGE_SIZE,
};

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (mode, limit, seed) = (data[0], data[1], data[2]);
    let generation = if mode & 1 == 0 {
        Generation::Gen3
    } else {
        Generation::Gen1
    };
    let mut cfg = DecoderConfig::new(generation);
    if mode & 2 != 0 {
        cfg.max_message_size = usize::from(limit);
    }
    if mode & 4 != 0 {
        cfg.known_types = Some(
            [0u16, 1, 10, 11, 200, 0x5658]
                .into_iter()
                .collect::<TypeSet>(),
        );
    }
    let batch = mode & 8 != 0;
    let body = &data[3..];
    if mode & 16 != 0 {
        structured(cfg, seed, body);
    } else {
        garbage(cfg, seed, batch, body);
    }
});

/// Piece sizes derived from `seed`: 1-byte pieces for seed 0, else a small LCG in 1..=64.
fn pieces(seed: u8, stream: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut state = u32::from(seed);
    let mut rest = stream;
    while !rest.is_empty() {
        let n = if seed == 0 {
            1
        } else {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            1 + (state >> 16) as usize % 64
        };
        let (a, b) = rest.split_at(n.min(rest.len()));
        out.push(a);
        rest = b;
    }
    out
}

struct Checker<'a> {
    dec: Decoder,
    stream: &'a [u8],
    fed: usize,
    /// Bytes fed since the last `decode_all`.
    since_decode: usize,
    /// Bytes consumed from the front of the stream (frames + discarded).
    consumed: usize,
    frames: Vec<Frame>,
    /// Bytes of all frames produced (headers included).
    frame_bytes: usize,
    rejections: u64,
}

impl<'a> Checker<'a> {
    fn new(cfg: DecoderConfig, stream: &'a [u8]) -> Self {
        Checker {
            dec: Decoder::new(cfg),
            stream,
            fed: 0,
            since_decode: 0,
            consumed: 0,
            frames: Vec::new(),
            frame_bytes: 0,
            rejections: 0,
        }
    }

    fn limit(&self) -> usize {
        self.dec.config().max_message_size
    }

    fn hlen(&self) -> usize {
        self.dec.config().generation.header_len()
    }

    fn feed(&mut self, piece: &[u8]) {
        self.dec.feed(piece);
        self.fed += piece.len();
        self.since_decode += piece.len();
        assert_eq!(self.dec.stats().bytes_in, self.fed as u64);
        // A decoded buffer holds less than one frame; then only what was fed since is added
        // (with a decode after every feed: at most the largest single feed).
        assert!(self.dec.buffered() < self.limit().max(self.hlen()) + self.since_decode);
    }

    fn decode_all(&mut self) {
        let generation = self.dec.config().generation;
        self.since_decode = 0;
        while let Some(d) = self.dec.decode() {
            let before = self.consumed;
            match d {
                Decoded::Frame(f) => {
                    // The frame is exactly the bytes at the front of the stream.
                    let mut enc = BytesMut::new();
                    let extra = match generation {
                        Generation::Gen3 => u64::from(f.flags),
                        Generation::Gen1 => f.timestamp_ms,
                    };
                    encode_parts(
                        generation,
                        f.message_type,
                        f.request_id,
                        extra,
                        &f.content,
                        &mut enc,
                    )
                    .expect("a decoded frame re-encodes");
                    assert!(enc.len() <= self.limit(), "frame over the limit");
                    assert_eq!(&self.stream[before..before + enc.len()], &enc[..]);
                    if let Some(known) = &self.dec.config().known_types {
                        assert!(known.contains(f.message_type));
                    }
                    self.consumed += enc.len();
                    self.frame_bytes += enc.len();
                    self.frames.push(f);
                }
                Decoded::Rejected(r) => {
                    self.rejections += 1;
                    match r {
                        Rejection::BadMagic { discarded } => {
                            assert_eq!(generation, Generation::Gen3);
                            assert!(discarded >= 1);
                            assert_ne!(&self.stream[before..before + 2], b"VX");
                            self.consumed += discarded;
                        }
                        Rejection::Oversize {
                            declared,
                            limit,
                            discarded,
                        } => {
                            assert!(declared > limit as u64);
                            assert_eq!(limit, self.limit());
                            assert!(discarded >= 1);
                            self.consumed += discarded;
                        }
                        Rejection::CrcMismatch {
                            expected, actual, ..
                        } => {
                            assert_ne!(expected, actual);
                            self.consumed = self.fed - self.dec.buffered();
                            assert!(self.consumed > before);
                        }
                        Rejection::UnknownType {
                            message_type, size, ..
                        } => {
                            let known = self.dec.config().known_types.as_ref().unwrap();
                            assert!(!known.contains(message_type));
                            self.consumed += self.hlen() + size as usize;
                        }
                        Rejection::Truncated { .. } => panic!("decode() reported Truncated"),
                        other => panic!("unexpected rejection {other:?}"),
                    }
                }
            }
            self.check_accounting();
            assert!(self.consumed > before, "decode() made no progress");
        }
        self.check_accounting();
        // Nothing decodable is left: less than a header, or less than one allowed frame.
        let b = self.dec.buffered();
        assert!(
            b < self.hlen() || b < self.limit(),
            "buffered {b} after decode"
        );
    }

    fn check_accounting(&self) {
        let s = self.dec.stats();
        assert_eq!(s.bytes_in, self.fed as u64);
        assert_eq!(s.frames, self.frames.len() as u64);
        assert_eq!(s.rejections(), self.rejections);
        assert_eq!(self.consumed + self.dec.buffered(), self.fed);
        assert_eq!(
            s.discarded_bytes + self.frame_bytes as u64,
            self.consumed as u64
        );
        // Resync work stays linear in the input (crafted bad-CRC streams included).
        assert!(s.hashed_bytes <= Decoder::MAX_HASH_FACTOR * s.bytes_in + Decoder::HASH_ALLOWANCE);
    }

    fn finish(&mut self) {
        let b = self.dec.buffered();
        match self.dec.finish() {
            None => assert_eq!(b, 0),
            Some(Rejection::Truncated { buffered }) => {
                assert_eq!(buffered, b);
                assert!(b > 0);
                self.rejections += 1;
                self.consumed += b;
            }
            Some(other) => panic!("finish() returned {other:?}"),
        }
        assert_eq!(self.dec.buffered(), 0);
        self.check_accounting();
        assert!(self.dec.decode().is_none());
    }
}

fn garbage(cfg: DecoderConfig, seed: u8, batch: bool, stream: &[u8]) {
    let mut c = Checker::new(cfg, stream);
    for (i, piece) in pieces(seed, stream).into_iter().enumerate() {
        c.feed(piece);
        if !batch || i % 4 == 3 {
            c.decode_all();
        }
    }
    c.decode_all();
    c.finish();
}

/// Turns the input into valid frames; all of them must come back unchanged, nothing rejected.
fn structured(mut cfg: DecoderConfig, seed: u8, input: &[u8]) {
    let generation = cfg.generation;
    cfg.max_message_size = DEFAULT_MAX_MESSAGE_SIZE;
    cfg.known_types = None;
    let mut frames = Vec::new();
    let mut wire = BytesMut::new();
    let mut rest = input;
    // Each frame: type u16, id u32, extra u8, len u8, then `len` content bytes.
    while rest.len() >= 8 {
        let message_type = u16::from_be_bytes([rest[0], rest[1]]);
        let mut request_id = u32::from_be_bytes([rest[2], rest[3], rest[4], rest[5]]);
        let extra = rest[6];
        let len = usize::from(rest[7]).min(rest.len() - 8);
        let content = &rest[8..8 + len];
        rest = &rest[8 + len..];
        let mut f = Frame::new(message_type, 0, content.to_vec());
        match generation {
            Generation::Gen3 => {
                request_id &= 0xFFFF;
                f.flags = extra;
            }
            Generation::Gen1 => f.timestamp_ms = u64::from(extra) << 40 | u64::from(request_id),
        }
        f.request_id = request_id;
        f.encode_into(generation, &mut wire).unwrap();
        frames.push(f);
    }
    let mut c = Checker::new(cfg, &wire);
    for piece in pieces(seed, &wire) {
        c.feed(piece);
        c.decode_all();
    }
    assert_eq!(c.rejections, 0);
    assert_eq!(c.dec.buffered(), 0);
    assert_eq!(c.frames, frames);
    c.finish();
}

//! Encode / decode micro-benchmarks, both wire generations, for 32 B, 1 KiB and 1 MiB contents.
//!
//! * `encode/<gen>/<size>`: one frame encoded (header + CRC + copy) into a reused buffer.
//! * `decode/<gen>/<size>`: a buffer holding many frames (about 256 KiB, at least 4 frames) is fed
//!   to a fresh decoder and every frame is decoded.
//!
//! Throughput is reported in bytes (frame bytes, headers included). Run time is kept short
//! (`cargo bench -p veltix-proto` takes well under two minutes); pass criterion options after
//! `--` for longer runs, e.g. `cargo bench -p veltix-proto -- --measurement-time 10`.

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use veltix_proto::{Decoded, Decoder, DecoderConfig, Frame, Generation};

const SIZES: [(usize, &str); 3] = [(32, "32B"), (1024, "1KiB"), (1024 * 1024, "1MiB")];
const GENERATIONS: [Generation; 2] = [Generation::Gen3, Generation::Gen1];

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

fn frame(g: Generation, len: usize) -> Frame {
    let mut f = Frame::new(200, 1234, content(len));
    if g == Generation::Gen1 {
        f.timestamp_ms = 435_720;
    }
    f
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for g in GENERATIONS {
        for (len, label) in SIZES {
            let f = frame(g, len);
            let mut out = BytesMut::with_capacity(f.encoded_len(g));
            group.throughput(Throughput::Bytes(f.encoded_len(g) as u64));
            group.bench_function(BenchmarkId::new(g.to_string(), label), |b| {
                b.iter(|| {
                    out.clear();
                    black_box(&f).encode_into(g, &mut out).unwrap();
                    black_box(out.len())
                })
            });
        }
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for g in GENERATIONS {
        for (len, label) in SIZES {
            let f = frame(g, len);
            let count = (256 * 1024 / f.encoded_len(g)).max(4);
            let mut wire = BytesMut::new();
            for _ in 0..count {
                f.encode_into(g, &mut wire).unwrap();
            }
            group.throughput(Throughput::Bytes(wire.len() as u64));
            group.bench_function(BenchmarkId::new(g.to_string(), label), |b| {
                b.iter(|| {
                    let mut dec = Decoder::new(DecoderConfig::new(g));
                    dec.feed(black_box(&wire));
                    let mut n = 0usize;
                    while let Some(d) = dec.decode() {
                        match d {
                            Decoded::Frame(f) => n += f.content.len(),
                            Decoded::Rejected(r) => panic!("{r}"),
                        }
                    }
                    assert_eq!(n, count * len);
                    n
                })
            });
        }
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = encode, decode
}
criterion_main!(benches);

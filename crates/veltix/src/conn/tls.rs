//! Driving a TLS connection: its own reader and writer around one `tokio-rustls` stream.
//!
//! The plaintext `drive` has two fast paths that touch the socket from outside the I/O task:
//! a sending thread writing the frame itself (`Outbox::stream`), and a blocking
//! `send_and_wait` reading the reply itself (`Rx::stream`). Neither applies to TLS, whose
//! session state (sequence numbers, keys, buffered records) must see every byte in order, so
//! both stay `None` here: sends always go through the outbound buffer to the writer below (which
//! still coalesces everything queued into one TLS write), and waiters are woken by the reader.
//! The plaintext path is left exactly as it was: the choice is made once per connection.

use std::sync::Arc;
use std::task::Poll;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsStream;
use veltix_proto::{Decoder, DecoderConfig, Frame};

use super::{keepalive_loop, lock, CloseReason, Conn, Stop, WriteEnd, MAX_READ};
use crate::pool::SerialQueue;
use crate::stats::add;
use crate::{DisconnectCause, Response};

/// A connection's byte stream once the handshakes are done.
pub(crate) enum Transport {
    /// Plain TCP: the fast paths apply.
    Plain(TcpStream),
    /// TLS over TCP (either role).
    Tls(Box<TlsStream<TcpStream>>),
}

/// Drives a connection over either transport (see [`super::drive`]).
pub(crate) async fn drive_transport<J: Send + 'static>(
    conn: Arc<Conn>,
    transport: Transport,
    leftover: Vec<u8>,
    queue: Arc<SerialQueue<J>>,
    wrap: impl Fn(Response) -> J + Send,
) -> CloseReason {
    match transport {
        Transport::Plain(s) => super::drive(conn, s, leftover, queue, wrap).await,
        // Boxed: the plaintext future does not grow by the TLS one.
        Transport::Tls(s) => Box::pin(drive_tls(conn, *s, leftover, queue, wrap)).await,
    }
}

type Tls = TlsStream<TcpStream>;

async fn drive_tls<J: Send + 'static>(
    conn: Arc<Conn>,
    stream: Tls,
    leftover: Vec<u8>,
    queue: Arc<SerialQueue<J>>,
    wrap: impl Fn(Response) -> J + Send,
) -> CloseReason {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut decoder = Decoder::new(DecoderConfig {
        max_message_size: conn.settings.max_message_size,
        ..DecoderConfig::new(conn.settings.generation)
    });
    decoder.feed(&leftover);
    lock(&conn.rx).decoder = Some(decoder);
    conn.touch();
    let (reason, linger_until) = {
        let reader = read_loop(&conn, &mut rd, &queue, wrap);
        let writer = write_loop(&conn, &mut wr);
        let keepalive = keepalive_loop(&conn);
        tokio::pin!(reader, writer, keepalive);
        tokio::select! {
            r = &mut reader => {
                conn.close_with(r.cause(), matches!(r, CloseReason::Io(_)));
                let deadline = Instant::now() + conn.settings.close_timeout;
                let mut linger = None;
                match tokio::time::timeout_at(deadline, &mut writer).await {
                    Err(_) => tracing::warn!(peer = %conn.peer, "could not flush queued data within {:?}; dropped", conn.settings.close_timeout),
                    Ok(WriteEnd::Flushed) if matches!(r, CloseReason::Local) => linger = Some(deadline),
                    Ok(_) => {}
                }
                (r, linger)
            }
            r = &mut keepalive => {
                add(&conn.counters.keepalive_timeouts, 1);
                conn.close_with(r.cause(), false);
                let _ = tokio::time::timeout(conn.settings.close_timeout, &mut writer).await;
                (r, None)
            }
            w = &mut writer => {
                let deadline = Instant::now() + conn.settings.close_timeout;
                match w {
                    WriteEnd::Flushed => {
                        let r = (&mut reader).await;
                        let linger = matches!(r, CloseReason::Local).then_some(deadline);
                        (r, linger)
                    }
                    WriteEnd::Aborted => {
                        conn.close_with(DisconnectCause::ClosedLocally, true);
                        let _ = (&mut reader).await;
                        (CloseReason::Local, None)
                    }
                    WriteEnd::Failed(e) => {
                        conn.close_with(DisconnectCause::Io(e.kind()), true);
                        let _ = (&mut reader).await;
                        (CloseReason::Io(e), None)
                    }
                }
            }
        }
    };
    if let Some(deadline) = linger_until {
        // Local close after the flush: close_notify (and FIN), then drain until the peer closes
        // too, so unread input does not turn our close into an RST (see `super::linger`).
        let _ = tokio::time::timeout_at(deadline, async {
            let _ = wr.shutdown().await;
            let mut sink = [0u8; 4096];
            while let Ok(n) = rd.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
    conn.finish_throttles();
    {
        let mut rx = lock(&conn.rx);
        rx.decoder = None;
        rx.backlog.clear();
    }
    reason
}

async fn read_loop<J: Send + 'static>(
    conn: &Conn,
    rd: &mut ReadHalf<Tls>,
    queue: &Arc<SerialQueue<J>>,
    wrap: impl Fn(Response) -> J,
) -> CloseReason {
    let mut stop = conn.stop.subscribe();
    let mut batch: Vec<(J, usize)> = Vec::new();
    let job = |f: Frame| {
        let weight = f.content.len() + 64;
        (wrap(Response::from_frame(f)), weight)
    };
    let buffer_size = conn.settings.buffer_size.max(1);
    let mut read_size = buffer_size;
    let mut drained = true;
    loop {
        let end = {
            let mut guard = lock(&conn.rx);
            let rx = &mut *guard;
            let mut end = rx.end.take();
            if let (None, Some(decoder)) = (&end, rx.decoder.as_mut()) {
                end = conn.decode_buffered(decoder, |f| batch.push(job(f)));
            }
            end
        };
        if !batch.is_empty() {
            queue.push_many(batch.drain(..));
        }
        if let Some(r) = end {
            return r;
        }
        if queue.over_limit() {
            while queue.over_limit() {
                tokio::select! {
                    _ = queue.space.notified() => {}
                    _ = stop.wait_for(|s| *s != Stop::Run) => return CloseReason::Local,
                }
            }
        }
        if drained {
            if let Some(d) = lock(&conn.rx).decoder.as_mut() {
                if d.buffered() == 0 {
                    *d.buffer_mut() = BytesMut::new();
                }
            }
        }
        // Decrypted bytes go straight into the decoder's buffer (no copy in between).
        let read = std::future::poll_fn(|cx| {
            let mut rx = lock(&conn.rx);
            let Some(decoder) = rx.decoder.as_mut() else {
                return Poll::Ready(Ok(None));
            };
            decoder.buffer_mut().reserve(read_size);
            let room = decoder.buffer_mut().capacity() - decoder.buffer_mut().len();
            let mut read = std::pin::pin!(rd.read_buf(decoder.buffer_mut()));
            match std::future::Future::poll(read.as_mut(), cx) {
                Poll::Ready(Ok(0)) => Poll::Ready(Ok(None)),
                Poll::Ready(Ok(n)) => {
                    decoder.note_received(n);
                    // Plaintext bytes (what the frames carry), as for a plaintext link.
                    add(&conn.counters.bytes_in, n as u64);
                    Poll::Ready(Ok(Some((n, room))))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        });
        let read = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s != Stop::Run) => return CloseReason::Local,
            r = read => r,
        };
        match read {
            // A peer that closes without close_notify only loses what it had not framed yet:
            // frames are length-delimited, so a truncation is seen by the decoder as usual.
            Ok(None) => return end_of_stream(conn),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return end_of_stream(conn),
            Ok(Some((n, room))) => {
                conn.touch();
                drained = n < room;
                if n >= room {
                    read_size = (read_size * 2).min(MAX_READ.max(buffer_size));
                } else if n < read_size / 4 {
                    read_size = (read_size / 2).max(buffer_size);
                }
            }
            Err(e) => return CloseReason::Io(e),
        }
    }
}

fn end_of_stream(conn: &Conn) -> CloseReason {
    match lock(&conn.rx).decoder.as_mut().and_then(Decoder::finish) {
        Some(r) => {
            conn.counters.rejection(&r);
            CloseReason::Protocol(r)
        }
        None => CloseReason::PeerClosed,
    }
}

async fn write_loop(conn: &Conn, wr: &mut WriteHalf<Tls>) -> WriteEnd {
    let mut stop = conn.stop.subscribe();
    let mut spare = BytesMut::new();
    loop {
        let mut frames = 0;
        let closing = {
            let mut ob = lock(&conn.out);
            if ob.buf.is_empty() {
                ob.writing = false;
            } else {
                std::mem::swap(&mut ob.buf, &mut spare);
                ob.writing = true;
                frames = std::mem::take(&mut ob.frames);
            }
            ob.closing
        };
        if spare.is_empty() {
            if closing {
                return WriteEnd::Flushed;
            }
            if super::await_output(conn, &mut spare, &mut stop)
                .await
                .is_err()
            {
                return WriteEnd::Aborted;
            }
            continue;
        }
        let written = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s == Stop::Abort) => return WriteEnd::Aborted,
            r = async {
                wr.write_all(&spare).await?;
                wr.flush().await
            } => r,
        };
        if let Err(e) = written {
            return WriteEnd::Failed(e);
        }
        // Plaintext bytes handed to the TLS session.
        add(&conn.counters.bytes_out, spare.len() as u64);
        add(&conn.counters.frames_out, frames);
        conn.note_write_end(&mut lock(&conn.out));
        spare.clear();
    }
}

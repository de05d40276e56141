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

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;

use super::{poll_read_into, supervise, CloseReason, Conn, Reading, Stop, WriteEnd};
use crate::pool::SerialQueue;
use crate::stats::add;
use crate::util::lock;
use crate::Response;

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
    lock(&conn.rx).decoder = Some(conn.decoder(&leftover));
    conn.touch();
    let (reason, linger_until) = supervise(
        &conn,
        read_loop(Reading::new(&conn, &queue, wrap), &mut rd),
        write_loop(&conn, &mut wr),
    )
    .await;
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

async fn read_loop<J: Send + 'static, W: Fn(Response) -> J>(
    mut r: Reading<'_, J, W>,
    rd: &mut ReadHalf<Tls>,
) -> CloseReason {
    let conn = r.conn;
    loop {
        if let Some(end) = r.before_read().await {
            return end;
        }
        // Decrypted bytes go straight into the decoder's buffer (no copy in between).
        let read_size = r.read_size;
        let read = std::future::poll_fn(|cx| poll_read_into(conn, read_size, rd, cx));
        let read = tokio::select! {
            biased;
            _ = r.stop.wait_for(|s| *s != Stop::Run) => return CloseReason::Local,
            read = read => read,
        };
        match read {
            // A peer that closes without close_notify only loses what it had not framed yet:
            // frames are length-delimited, so a truncation is seen by the decoder as usual.
            Ok(None) => return r.end_of_stream(),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return r.end_of_stream(),
            Ok(Some((n, room))) => r.read_done(n, room),
            Err(e) => return CloseReason::Io(e),
        }
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

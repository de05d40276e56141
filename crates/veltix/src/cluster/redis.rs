//! The Redis [`Broker`]: PUBLISH/SUBSCRIBE for messages, `SET PX` keys for presence.
//!
//! One multiplexed command connection (publishes are pipelined on it, so what one sender
//! publishes reaches Redis in order) and one subscriber connection per subscription. The
//! broker does not reconnect by itself: the cluster node that owns it notices a failure,
//! calls [`Broker::connect`] again with backoff and resubscribes.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use super::{BoxFuture, Broker, BrokerError, Subscription};

/// Longest a Redis command may take before it counts as a broker failure.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a connection attempt to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// SCAN rounds per presence query (bounded loop; 1000 keys per round).
const MAX_SCAN_ROUNDS: usize = 10_000;

/// A [`Broker`] on one Redis server (`redis://HOST:PORT[/DB]`).
///
/// ```
/// use veltix::cluster::RedisBroker;
/// let broker = RedisBroker::new("redis://127.0.0.1:6379", "veltix")?;
/// assert!(RedisBroker::new("not a url", "veltix").is_err());
/// # Ok::<(), veltix::cluster::BrokerError>(())
/// ```
pub struct RedisBroker {
    client: redis::Client,
    prefix: String,
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("addr", &self.client.get_connection_info().addr)
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn err(e: redis::RedisError) -> BrokerError {
    BrokerError(e.to_string())
}

impl RedisBroker {
    /// A broker for `url`; keys and channels are named `PREFIX:...`. Does not connect yet.
    /// Fails on a malformed URL.
    pub fn new(url: &str, prefix: &str) -> Result<Self, BrokerError> {
        let client = redis::Client::open(url).map_err(err)?;
        Ok(RedisBroker {
            client,
            prefix: prefix.to_string(),
            conn: Mutex::new(None),
        })
    }

    fn presence_key(&self, node: &str) -> String {
        format!("{}:presence:{node}", self.prefix)
    }

    fn conn(&self) -> Result<MultiplexedConnection, BrokerError> {
        crate::util::lock(&self.conn)
            .clone()
            .ok_or_else(|| BrokerError("not connected to Redis".into()))
    }

    /// Runs a command; a failure drops the connection (the owner reconnects).
    async fn run<T: redis::FromRedisValue>(
        &self,
        f: impl FnOnce(&mut redis::Pipeline),
    ) -> Result<T, BrokerError> {
        let mut conn = self.conn()?;
        let mut pipe = redis::pipe();
        f(&mut pipe);
        match pipe.query_async::<T>(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_unrecoverable_error()
                {
                    *crate::util::lock(&self.conn) = None;
                }
                Err(err(e))
            }
        }
    }
}

impl Broker for RedisBroker {
    fn connect(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(CONNECT_TIMEOUT)
                .set_response_timeout(RESPONSE_TIMEOUT);
            let conn = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(err)?;
            *crate::util::lock(&self.conn) = Some(conn);
            Ok(())
        })
    }

    fn subscribe(&self, channels: Vec<String>) -> BoxFuture<'_, Result<Subscription, BrokerError>> {
        Box::pin(async move {
            let attempt = async {
                let mut ps = self.client.get_async_pubsub().await.map_err(err)?;
                for c in &channels {
                    ps.subscribe(c).await.map_err(err)?;
                }
                Ok::<_, BrokerError>(ps)
            };
            let ps = tokio::time::timeout(CONNECT_TIMEOUT + RESPONSE_TIMEOUT, attempt)
                .await
                .map_err(|_| BrokerError("subscribing to Redis timed out".into()))??;
            let stream = ps.into_on_message().map(|m| {
                (
                    m.get_channel_name().to_string(),
                    Bytes::copy_from_slice(m.get_payload_bytes()),
                )
            });
            Ok(Box::pin(stream) as Subscription)
        })
    }

    fn publish(&self, batch: Vec<(String, Bytes)>) -> BoxFuture<'_, Result<Vec<u64>, BrokerError>> {
        Box::pin(async move {
            self.run(|p| {
                for (channel, payload) in &batch {
                    p.cmd("PUBLISH").arg(channel).arg(payload.as_ref());
                }
            })
            .await
        })
    }

    fn set_presence(
        &self,
        node: &str,
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        let key = self.presence_key(node);
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        Box::pin(async move {
            self.run::<()>(|p| {
                p.cmd("SET")
                    .arg(&key)
                    .arg(value.as_ref())
                    .arg("PX")
                    .arg(ms)
                    .ignore();
            })
            .await
        })
    }

    fn remove_presence(&self, node: &str) -> BoxFuture<'_, Result<(), BrokerError>> {
        let key = self.presence_key(node);
        Box::pin(async move {
            self.run::<()>(|p| {
                p.cmd("DEL").arg(&key).ignore();
            })
            .await
        })
    }

    fn presence(&self) -> BoxFuture<'_, Result<Vec<Bytes>, BrokerError>> {
        Box::pin(async move {
            let pattern = format!("{}:presence:*", self.prefix);
            let mut keys: Vec<String> = Vec::new();
            let mut cursor: u64 = 0;
            for _ in 0..MAX_SCAN_ROUNDS {
                let ((next, mut batch),): ((u64, Vec<String>),) = self
                    .run(|p| {
                        p.cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(1000);
                    })
                    .await?;
                keys.append(&mut batch);
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
            keys.sort();
            keys.dedup();
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let (values,): (Vec<Option<Vec<u8>>>,) = self
                .run(|p| {
                    p.cmd("MGET").arg(&keys);
                })
                .await?;
            // A key may expire between SCAN and MGET: it is simply gone.
            Ok(values.into_iter().flatten().map(Bytes::from).collect())
        })
    }

    fn round_trip(&self, channel: &str) -> BoxFuture<'_, Result<Duration, BrokerError>> {
        let channel = channel.to_string();
        Box::pin(async move {
            let t0 = std::time::Instant::now();
            let _: (u64,) = self
                .run(|p| {
                    p.cmd("PUBLISH").arg(&channel).arg("ping");
                })
                .await?;
            Ok(t0.elapsed())
        })
    }
}

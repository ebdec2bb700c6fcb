//! The Redis client: optional, time-bounded and failure-tolerant. Every call is
//! bounded by `REDIS_TIMEOUT`, and after a failure a breaker skips Redis for a while,
//! so a dead or frozen Redis makes voucherd slower, never wrong or stuck.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use redis::{AsyncCommands, aio::ConnectionManager};

/// After a Redis failure, calls are skipped for this long so a dead or frozen
/// Redis costs one timeout per interval, not one per request.
const BREAKER_OPEN: Duration = Duration::from_secs(1);

/// Redis as an optional, time-bounded, failure-tolerant key-value cache.
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    timeout: Duration,
    /// Unix millis until which Redis is considered down.
    open_until: Arc<AtomicU64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Redis {
    /// Connects lazily: an unreachable Redis at startup is not an error.
    pub fn connect(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Redis {
            conn,
            timeout,
            open_until: Arc::new(AtomicU64::new(0)),
        })
    }

    async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if now_ms() < self.open_until.load(Ordering::Relaxed) {
            return None;
        }
        match tokio::time::timeout(self.timeout, f(self.conn.clone())).await {
            Ok(Ok(v)) => Some(v),
            failure => {
                let reason = match failure {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_string(),
                };
                tracing::warn!(op, reason, "redis call failed; continuing without it");
                metrics::counter!("voucherd_redis_errors_total", "op" => op).increment(1);
                self.open_until.store(
                    now_ms() + BREAKER_OPEN.as_millis() as u64,
                    Ordering::Relaxed,
                );
                None
            }
        }
    }

    pub async fn get(&self, key: &str) -> Option<String> {
        self.call("get", |mut c| async move {
            c.get::<_, Option<String>>(key).await
        })
        .await
        .flatten()
    }

    pub async fn get_bytes(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.call("get", |mut c| async move {
            c.get::<_, Option<Vec<u8>>>(key).await
        })
        .await
        .flatten()
    }

    /// A value with the milliseconds it has left to live (`None` without an expiry).
    pub async fn get_bytes_with_ttl(&self, key: &[u8]) -> Option<(Vec<u8>, Option<u64>)> {
        let (value, pttl): (Option<Vec<u8>>, i64) = self
            .call("get", |mut c| async move {
                redis::pipe().get(key).pttl(key).query_async(&mut c).await
            })
            .await?;
        Some((value?, u64::try_from(pttl).ok()))
    }

    pub async fn set_bytes_px(&self, key: &[u8], value: &[u8], ttl_ms: u64) {
        self.call("set", |mut c| async move {
            c.pset_ex::<_, _, ()>(key, value, ttl_ms).await
        })
        .await;
    }

    pub async fn set_px(&self, key: &str, value: &str, ttl_ms: u64) {
        self.call("set", |mut c| async move {
            c.pset_ex::<_, _, ()>(key, value, ttl_ms).await
        })
        .await;
    }

    /// Whether `key` exists; `None` when Redis could not say (down, slow, breaker open).
    pub async fn exists(&self, key: &str) -> Option<bool> {
        self.call(
            "exists",
            |mut c| async move { c.exists::<_, bool>(key).await },
        )
        .await
    }

    pub async fn del(&self, key: &str) {
        self.call("del", |mut c| async move { c.del::<_, ()>(key).await })
            .await;
    }

    /// For `/readyz`: whether Redis answers a PING now (ignores the breaker).
    pub async fn ping(&self) -> bool {
        let mut c = self.conn.clone();
        matches!(
            tokio::time::timeout(
                self.timeout,
                redis::cmd("PING").query_async::<String>(&mut c)
            )
            .await,
            Ok(Ok(_))
        )
    }
}

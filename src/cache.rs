//! Read caches for campaign state: an in-process cache in front, Redis shared
//! between instances behind it, Postgres behind both. The cache only ever serves
//! reads and refusals; a grant is always decided by Postgres, so a stale, flushed or
//! unreachable Redis can make voucherd slower but never wrong.

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use redis::{AsyncCommands, aio::ConnectionManager};
use sqlx::PgPool;

use crate::{
    campaigns::{self, CampaignRow},
    dbwatch::DbWatch,
    domain::{CampaignId, UserId},
    error::{ApiError, ApiResult},
};

/// How stale a campaign snapshot may be in this process. The public `remaining`
/// lags by at most this plus `REDIS_TTL`.
const LOCAL_TTL: Duration = Duration::from_millis(500);
/// How long a snapshot lives in Redis. Admin changes delete it at once; the TTL
/// bounds staleness when that delete could not reach Redis.
const REDIS_TTL_MS: u64 = 1000;
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

fn redis_key(id: CampaignId) -> String {
    format!("voucherd:campaign:{id}")
}

/// Users known to hold a voucher of a sold-out campaign, as sorted hashes. A hash
/// collision only costs a database lookup; a user absent from the set provably
/// holds none, so their grab cannot be a replay and is refused from memory.
pub struct Holders(Vec<u64>);

fn user_hash(user: &UserId) -> u64 {
    let mut h = DefaultHasher::new();
    user.as_str().hash(&mut h);
    h.finish()
}

impl Holders {
    pub fn contains(&self, user: &UserId) -> bool {
        self.0.binary_search(&user_hash(user)).is_ok()
    }
}

#[derive(Clone)]
pub struct CampaignCache {
    local: moka::future::Cache<CampaignId, Option<Arc<CampaignRow>>>,
    /// Keyed by total stock: new stock makes a new (and no longer sold-out) entry.
    holders: moka::future::Cache<(CampaignId, i64), Arc<Holders>>,
    redis: Option<Redis>,
    dbwatch: DbWatch,
}

/// `moka` shares one loader error between all waiters; rebuild an owned one.
fn shared_error(e: Arc<ApiError>) -> ApiError {
    match &*e {
        ApiError::Internal(inner) => {
            ApiError::Internal(anyhow::anyhow!("campaign load failed: {inner:#}"))
        }
        other => other.clone_refusal(),
    }
}

impl CampaignCache {
    pub fn new(redis: Option<Redis>, dbwatch: DbWatch) -> Self {
        CampaignCache {
            local: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(LOCAL_TTL)
                .build(),
            holders: moka::future::Cache::builder()
                .max_capacity(64)
                .time_to_live(Duration::from_secs(600))
                .build(),
            redis,
            dbwatch,
        }
    }

    pub fn redis(&self) -> Option<&Redis> {
        self.redis.as_ref()
    }

    /// The campaign as of at most about a second ago, or `None` if it does not exist.
    /// Concurrent misses for one campaign share a single load.
    pub async fn get(&self, pool: &PgPool, id: CampaignId) -> ApiResult<Option<Arc<CampaignRow>>> {
        self.local
            .try_get_with(id, self.load(pool, id))
            .await
            .map_err(shared_error)
    }

    async fn load(&self, pool: &PgPool, id: CampaignId) -> ApiResult<Option<Arc<CampaignRow>>> {
        if let Some(redis) = &self.redis
            && let Some(json) = redis.get(&redis_key(id)).await
            && let Ok(row) = serde_json::from_str::<CampaignRow>(&json)
        {
            return Ok(Some(Arc::new(row)));
        }
        self.dbwatch.check()?;
        let row = campaigns::fetch(pool, id).await?;
        if let (Some(redis), Some(row)) = (&self.redis, &row)
            && let Ok(json) = serde_json::to_string(row)
        {
            redis.set_px(&redis_key(id), &json, REDIS_TTL_MS).await;
        }
        Ok(row.map(Arc::new))
    }

    /// Forgets a campaign here and in Redis, after an admin change or when a grab
    /// learns from Postgres that the snapshot is out of date.
    pub async fn invalidate(&self, id: CampaignId) {
        self.local.invalidate(&id).await;
        if let Some(redis) = &self.redis {
            redis.del(&redis_key(id)).await;
        }
    }

    /// Whether `user` might hold a voucher of this sold-out campaign.
    pub async fn may_hold(
        &self,
        pool: &PgPool,
        campaign: &CampaignRow,
        user: &UserId,
    ) -> ApiResult<bool> {
        let id = CampaignId(campaign.id);
        let holders = self
            .holders
            .try_get_with((id, campaign.total_stock), async {
                self.dbwatch.check()?;
                let users: Vec<String> =
                    sqlx::query_scalar("SELECT user_id FROM user_claims WHERE campaign_id = $1")
                        .bind(campaign.id)
                        .fetch_all(pool)
                        .await?;
                let mut hashes: Vec<u64> = users
                    .iter()
                    .filter_map(|u| UserId::parse(u))
                    .map(|u| user_hash(&u))
                    .collect();
                hashes.sort_unstable();
                Ok::<_, ApiError>(Arc::new(Holders(hashes)))
            })
            .await
            .map_err(shared_error)?;
        Ok(holders.contains(user))
    }
}

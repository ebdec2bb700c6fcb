//! Read caches for campaign state: an in-process cache in front, Redis shared
//! between instances behind it, Postgres behind both. The cache only ever serves
//! reads and refusals; a grant is always decided by Postgres, so a stale, flushed or
//! unreachable Redis can make voucherd slower but never wrong.

use std::{sync::Arc, time::Duration};

use sqlx::PgPool;

use crate::{
    campaigns::row::{self, CampaignRow},
    dbclock::DbClock,
    dbwatch::DbWatch,
    domain::{CampaignId, UserId},
    error::{ApiError, ApiResult},
    redis::Redis,
    replica::Reads,
};

/// How stale a campaign snapshot may be in this process. The public `remaining`
/// lags by at most this plus `REDIS_TTL`.
const LOCAL_TTL: Duration = Duration::from_millis(500);
/// How long a snapshot lives in Redis. Admin changes delete it at once; the TTL
/// bounds staleness when that delete could not reach Redis.
const REDIS_TTL_MS: u64 = 1000;

fn redis_key(id: CampaignId) -> String {
    format!("voucherd:campaign:{id}")
}

/// Users who hold a voucher of a campaign that cannot grant (sold out, paused,
/// ended), as a Bloom filter: a user it does not contain provably holds none, so their
/// grab cannot be a replay and is refused from memory; a false positive (1 in 100)
/// costs one indexed read of the key, never a wrong answer. About 1.2 bytes per
/// holder, so ten million holders fit in 12 MiB, built a page at a time.
pub(crate) struct Holders(fastbloom::BloomFilter);

/// The filter's false-positive rate.
const HOLDERS_FALSE_POSITIVES: f64 = 0.01;
/// Holders read per query while the filter is built.
const HOLDERS_PAGE: i64 = 50_000;
/// The most holders a filter is sized for (60 MiB).
const HOLDERS_SIZED_MAX: i64 = 50_000_000;
/// All holder filters of this process together.
const HOLDERS_MEMORY: u64 = 256 * 1024 * 1024;

impl Holders {
    /// An empty filter sized for up to `holders` users (a campaign's `issued` bounds
    /// its holders).
    pub(crate) fn sized_for(holders: u64) -> Self {
        Holders(
            fastbloom::BloomFilter::with_false_pos(HOLDERS_FALSE_POSITIVES)
                .expected_items(holders.max(1) as usize),
        )
    }

    pub(crate) fn insert(&mut self, user: &str) {
        self.0.insert(user);
    }

    pub(crate) fn contains(&self, user: &UserId) -> bool {
        self.0.contains(user.as_str())
    }

    /// The filter's memory.
    pub(crate) fn bytes(&self) -> usize {
        self.0.num_bits() / 8
    }

    /// Reads the campaign's holders from Postgres, `HOLDERS_PAGE` at a time in key
    /// order, so no query returns (or holds in memory) more than a page.
    async fn load(pool: &PgPool, campaign: &CampaignRow) -> Result<Self, sqlx::Error> {
        // `issued` bounds the holders; past the cap the filter only gets less exact
        // (more indexed reads), never wrong, and its memory stays bounded.
        let mut holders = Holders::sized_for(campaign.issued.clamp(0, HOLDERS_SIZED_MAX) as u64);
        let mut after = String::new();
        loop {
            let page: Vec<String> = sqlx::query_scalar!(
                "SELECT user_id FROM user_grants WHERE campaign_id = $1 AND user_id > $2
                 ORDER BY user_id LIMIT $3",
                campaign.id,
                &after,
                HOLDERS_PAGE,
            )
            .fetch_all(pool)
            .await?;
            for user in &page {
                holders.insert(user);
            }
            let full = page.len() as i64 == HOLDERS_PAGE;
            match page.into_iter().last() {
                Some(last) if full => after = last,
                _ => return Ok(holders),
            }
        }
    }
}

#[derive(Clone)]
pub struct CampaignCache {
    local: moka::future::Cache<CampaignId, Option<Arc<CampaignRow>>>,
    /// Keyed by the campaign's `issued` and `updated_at`: a campaign that cannot grant
    /// keeps its holders, and any grant since makes a new entry. `issued` alone does
    /// not do: a void that returns its stock lowers it, and the grant that takes the
    /// unit back would reach an `issued` already keyed, with one holder fewer; such a
    /// void moves `updated_at` forward, which grants never do.
    holders: moka::future::Cache<(CampaignId, i64, chrono::DateTime<chrono::Utc>), Arc<Holders>>,
    /// The public list of campaigns not over yet: one read a second however many
    /// storefronts refresh it.
    listed: moka::future::Cache<(), Arc<Vec<CampaignRow>>>,
    redis: Option<Redis>,
    dbwatch: DbWatch,
    /// Postgres' clock, measured with every snapshot read from Postgres.
    clock: DbClock,
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
                .weigher(|_, h: &Arc<Holders>| u32::try_from(h.bytes()).unwrap_or(u32::MAX))
                .max_capacity(HOLDERS_MEMORY)
                .time_to_live(Duration::from_secs(600))
                .build(),
            listed: moka::future::Cache::builder()
                .max_capacity(1)
                .time_to_live(Duration::from_secs(1))
                .build(),
            redis,
            dbwatch,
            clock: DbClock::default(),
        }
    }

    /// Postgres' clock as last measured.
    pub fn clock(&self) -> &DbClock {
        &self.clock
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
        // Another instance's snapshot will do while this one's clock reading is
        // fresh; otherwise read Postgres, which also measures its clock.
        if let Some(redis) = &self.redis
            && self.clock.is_fresh()
            && let Some(json) = redis.get(&redis_key(id)).await
            && let Ok(row) = serde_json::from_str::<CampaignRow>(&json)
        {
            return Ok(Some(Arc::new(row)));
        }
        self.dbwatch.check()?;
        let row = row::fetch_measuring_clock(pool, id, &self.clock).await?;
        if let (Some(redis), Some(row)) = (&self.redis, &row)
            && let Ok(json) = serde_json::to_string(row)
        {
            redis.set_px(&redis_key(id), &json, REDIS_TTL_MS).await;
        }
        Ok(row.map(Arc::new))
    }

    /// The campaigns not over yet, as of at most a second ago; concurrent misses share
    /// one read.
    pub(crate) async fn listed(&self, reads: &Reads) -> ApiResult<Arc<Vec<CampaignRow>>> {
        self.listed
            .try_get_with((), async {
                self.dbwatch.check()?;
                // a replica's clock is not the one that decides: measure the primary's only
                let rows = reads
                    .for_public(|pool, primary| async move {
                        row::fetch_listed(&pool, primary.then_some(&self.clock)).await
                    })
                    .await?;
                Ok::<_, ApiError>(Arc::new(rows))
            })
            .await
            .map_err(shared_error)
    }

    /// Forgets a campaign here and in Redis, after an admin change or when a grab
    /// learns from Postgres that the snapshot is out of date.
    pub async fn invalidate(&self, id: CampaignId) {
        self.local.invalidate(&id).await;
        if let Some(redis) = &self.redis {
            redis.del(&redis_key(id)).await;
        }
    }

    /// Whether `user` might hold a voucher of this campaign, which cannot grant now
    /// (so its holders do not change while `issued` does not). Concurrent misses
    /// share one load.
    pub async fn may_hold(
        &self,
        pool: &PgPool,
        campaign: &CampaignRow,
        user: &UserId,
    ) -> ApiResult<bool> {
        let id = CampaignId(campaign.id);
        self.dbwatch.check()?;
        // Loaded in a task of its own, which puts the filter in the cache itself: a
        // caller that times out or disconnects does not throw away a load that the
        // rest of the herd is waiting for (ten million holders are 200 pages).
        let (cache, pool, row) = (self.holders.clone(), pool.clone(), campaign.clone());
        let holders = tokio::spawn(async move {
            cache
                .try_get_with((id, row.issued, row.updated_at), async {
                    Ok::<_, ApiError>(Arc::new(Holders::load(&pool, &row).await?))
                })
                .await
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(shared_error)?;
        Ok(holders.contains(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_million_holders_fit_in_32_mib_and_every_holder_is_found() {
        let filter = Holders::sized_for(10_000_000);
        assert!(
            filter.bytes() <= 32 * 1024 * 1024,
            "{} bytes for ten million holders",
            filter.bytes()
        );
        let mut holders = Holders::sized_for(20_000);
        for i in 0..20_000 {
            holders.insert(&format!("user-{i}"));
        }
        for i in 0..20_000 {
            assert!(holders.contains(&UserId::parse(&format!("user-{i}")).unwrap()));
        }
        let strangers = (0..20_000)
            .filter(|i| holders.contains(&UserId::parse(&format!("stranger-{i}")).unwrap()))
            .count();
        // 1% expected; a filter that answered "maybe" to everyone would be useless.
        assert!(strangers < 600, "{strangers} false positives in 20,000");
    }
}

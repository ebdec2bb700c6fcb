//! Reads that need not touch the primary: wallets and the public campaign list may be
//! read from a replica (`READ_DATABASE_URL`), but only while it is known to be fresh
//! enough, and never for a user within `REPLICA_READ_AFTER_WRITE` of their own effect,
//! so nobody sees their fresh voucher missing. Everything that decides (grants,
//! refusals from campaign snapshots, redemptions) reads the primary.
//!
//! Freshness is measured, not assumed: every `SAMPLE` the primary's WAL position is
//! noted with the instant it was read, and the replica's replayed position is compared
//! with those notes. Everything committed before the newest note the replica has
//! replayed past is visible on it; the replica is used only while that note is younger
//! than the window. A user's own effects are marked here and in Redis for the window,
//! so another instance sees the mark too; where Redis cannot say, the user's reads go
//! to the primary.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sqlx::PgPool;

use crate::{domain::UserId, redis::Redis};

/// How often the primary's position and the replica's replay are read.
const SAMPLE: Duration = Duration::from_millis(250);
/// Users marked in this process at once; beyond it marks may be dropped early (the
/// cache evicts by its own measure of use, not by age); Redis still holds them.
const MARKS_MAX: u64 = 1_000_000;
/// Samples of the replay the bound is taken over (a second's worth).
const RECENT: usize = 4;
/// The longest one sample may take: a replica that does not answer (a dead
/// connection the kernel has not noticed) is unknown, so not read, not waited on.
const SAMPLE_TIMEOUT: Duration = Duration::from_millis(500);

/// Where a read goes.
#[derive(Clone)]
pub struct Reads {
    primary: PgPool,
    replica: Option<Arc<Replica>>,
}

struct Replica {
    pool: PgPool,
    window: Duration,
    redis: Option<Redis>,
    /// Users who made an effect within the window, with when.
    marks: quick_cache::sync::Cache<String, Instant>,
    /// The newest primary sample the replica has replayed past: everything committed
    /// before this instant is visible on the replica. `None` until known, and while the
    /// replica does not answer or is not a standby.
    covered: Mutex<Option<Instant>>,
}

impl Reads {
    pub fn new(
        primary: PgPool,
        replica: Option<PgPool>,
        window: Duration,
        redis: Option<Redis>,
    ) -> Self {
        Reads {
            primary,
            replica: replica.map(|pool| {
                Arc::new(Replica {
                    pool,
                    window,
                    redis,
                    marks: quick_cache::sync::Cache::new(MARKS_MAX as usize),
                    covered: Mutex::new(None),
                })
            }),
        }
    }

    /// Runs `read` of `user`'s own data on the replica when it may answer it, else on
    /// the primary; a replica that fails the read (gone, or a query cancelled by
    /// replay) is followed by the primary.
    pub async fn for_user<T, F, Fut>(&self, user: &UserId, read: F) -> Result<T, sqlx::Error>
    where
        F: Fn(PgPool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        match self.replica_for(user).await {
            Some(replica) => self.or_primary(read(replica).await, read).await,
            None => read(self.primary.clone()).await,
        }
    }

    /// Runs `read` of what anyone may see a second late (the public list) on the
    /// replica while it is fresh, else on the primary; the flag says which (only the
    /// primary's clock may be measured).
    pub async fn for_public<T, F, Fut>(&self, read: F) -> Result<T, sqlx::Error>
    where
        F: Fn(PgPool, bool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        match self.replica.as_deref() {
            Some(r) if r.fresh() => {
                let first = read(r.pool.clone(), false).await;
                self.or_primary(first, |p| read(p, true)).await
            }
            _ => read(self.primary.clone(), true).await,
        }
    }

    async fn or_primary<T, F, Fut>(
        &self,
        first: Result<T, sqlx::Error>,
        read: F,
    ) -> Result<T, sqlx::Error>
    where
        F: Fn(PgPool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        match first {
            Err(e) => {
                tracing::warn!(error = %e, "the replica failed a read; reading the primary");
                read(self.primary.clone()).await
            }
            done => done,
        }
    }

    /// The replica, if it may answer a read of `user`'s own data now.
    async fn replica_for(&self, user: &UserId) -> Option<PgPool> {
        let r = self.replica.as_deref()?;
        if !r.fresh() || r.marked_here(user) {
            return None;
        }
        match &r.redis {
            // marked elsewhere, or Redis cannot say: the primary
            Some(redis) if redis.exists(&mark_key(user)).await == Some(false) => {
                Some(r.pool.clone())
            }
            // Without Redis no instance knows another's marks, and behind a balancer
            // a user's next read may land elsewhere: their own data stays on the primary
            // (the public list still uses the replica).
            _ => None,
        }
    }

    /// Notes that `user` just made an effect: their reads stay on the primary for the
    /// window.
    pub async fn wrote(&self, user: &UserId) {
        let Some(r) = self.replica.as_deref() else {
            return;
        };
        r.marks.insert(user.as_str().to_string(), Instant::now());
        if let Some(redis) = &r.redis {
            redis
                .set_px(&mark_key(user), "1", r.window.as_millis() as u64)
                .await;
        }
    }

    /// A guard for a grab in flight: dropped before `settled` (its client left, or the
    /// deadline answered it), its grant may still commit, so the user is marked as
    /// having written; a grab that settled marks only if it granted. Nothing without a
    /// replica.
    pub fn pending(&self, user: &UserId) -> Option<PendingEffect> {
        self.replica.as_ref()?;
        Some(PendingEffect {
            reads: self.clone(),
            user: Some(user.clone()),
        })
    }

    /// Samples the primary's WAL position and the replica's replay, every `SAMPLE`,
    /// for as long as the process runs; returns at once without a replica.
    pub async fn watch(self) {
        let Some(r) = self.replica.clone() else {
            return;
        };
        let mut notes: VecDeque<(u64, Instant)> = VecDeque::new();
        let mut recent: VecDeque<Option<Instant>> = VecDeque::new();
        let mut was_standby = true;
        let mut ticks = tokio::time::interval(SAMPLE);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let at = Instant::now();
            match tokio::time::timeout(SAMPLE_TIMEOUT, primary_position(&self.primary))
                .await
                .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut))
            {
                Ok(lsn) => notes.push_back((lsn, at)),
                Err(e) => tracing::debug!(error = %e, "primary WAL position unknown"),
            }
            // notes older than the window can never make the replica fresh
            while notes
                .front()
                .is_some_and(|(_, t)| t.elapsed() > r.window * 2)
            {
                notes.pop_front();
            }
            let answer = tokio::time::timeout(SAMPLE_TIMEOUT, replayed(&r.pool))
                .await
                .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut));
            let standby = !matches!(answer, Ok(None));
            if was_standby && !standby {
                tracing::warn!("READ_DATABASE_URL is not a standby; reading the primary");
            }
            was_standby = standby;
            let covered = match answer {
                Ok(Some(replayed)) => notes
                    .iter()
                    .rev()
                    .find(|(lsn, _)| *lsn <= replayed)
                    .map(|(_, t)| *t),
                Ok(None) => None,
                Err(e) => {
                    tracing::debug!(error = %e, "replica did not answer; reading the primary");
                    None
                }
            };
            // Behind a balancer, each read may reach another standby: the bound is the
            // oldest of the last few samples, and unknown if any of them was.
            recent.push_back(covered);
            if recent.len() > RECENT {
                recent.pop_front();
            }
            let bound = recent
                .iter()
                .copied()
                .collect::<Option<Vec<_>>>()
                .and_then(|v| v.into_iter().min());
            *r.covered.lock().unwrap_or_else(|p| p.into_inner()) = bound;
        }
    }
}

/// See `Reads::pending`.
pub struct PendingEffect {
    reads: Reads,
    /// `None` once settled.
    user: Option<UserId>,
}

impl PendingEffect {
    /// The grab's answer is known: mark the user if it granted (or replayed).
    pub async fn settled(mut self, granted: bool) {
        if let Some(user) = self.user.take()
            && granted
        {
            self.reads.wrote(&user).await;
        }
    }
}

impl Drop for PendingEffect {
    fn drop(&mut self) {
        if let Some(user) = self.user.take() {
            let reads = self.reads.clone();
            tokio::spawn(async move { reads.wrote(&user).await });
        }
    }
}

impl Replica {
    /// Whether the replica shows everything committed up to `window` ago.
    fn fresh(&self) -> bool {
        self.covered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < self.window)
    }

    fn marked_here(&self, user: &UserId) -> bool {
        self.marks
            .get(user.as_str())
            .is_some_and(|t| t.elapsed() < self.window)
    }
}

fn mark_key(user: &UserId) -> String {
    format!("voucherd:wrote:{}", user.as_str())
}

/// The primary's current WAL write position.
async fn primary_position(primary: &PgPool) -> Result<u64, sqlx::Error> {
    let lsn = sqlx::query_scalar!(r#"SELECT pg_current_wal_lsn()::text AS "lsn!""#)
        .fetch_one(primary)
        .await?;
    // an unreadable position must not become 0, which every replica has replayed
    parse_lsn(&lsn).ok_or_else(|| sqlx::Error::Protocol(format!("unreadable WAL position {lsn}")))
}

/// The position the replica has replayed; `None` if it is not a standby.
async fn replayed(replica: &PgPool) -> Result<Option<u64>, sqlx::Error> {
    // a promoted server still reports the last position it replayed: only a server in
    // recovery is a standby
    let lsn = sqlx::query_scalar!(
        r#"SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text END AS "lsn""#
    )
    .fetch_one(replica)
    .await?;
    Ok(lsn.as_deref().and_then(parse_lsn))
}

/// `16/B374D848` as one number.
fn parse_lsn(lsn: &str) -> Option<u64> {
    let (hi, lo) = lsn.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_compare_as_numbers() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert!(parse_lsn("1/FFFFFFFF") < parse_lsn("2/0"));
        for bad in ["", "16", "x/1", "1/", "/1", "1/2/3"] {
            assert_eq!(parse_lsn(bad), None, "{bad}");
        }
    }

    fn lazy(url: &str) -> PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .connect_lazy(url)
            .unwrap()
    }

    #[tokio::test]
    async fn a_grab_dropped_unanswered_marks_its_user_and_a_refused_one_does_not() {
        let reads = Reads::new(
            lazy("postgres://nobody@127.0.0.1:9/primary"),
            Some(lazy("postgres://nobody@127.0.0.1:9/replica")),
            Duration::from_secs(2),
            None,
        );
        let marked = |u: &UserId| reads.replica.as_ref().unwrap().marked_here(u);
        let (gone, refused, granted) = (
            UserId::parse("gone").unwrap(),
            UserId::parse("refused").unwrap(),
            UserId::parse("granted").unwrap(),
        );
        drop(reads.pending(&gone));
        reads.pending(&refused).unwrap().settled(false).await;
        reads.pending(&granted).unwrap().settled(true).await;
        // the dropped guard marks from a task of its own
        for _ in 0..100 {
            if marked(&gone) {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(
            marked(&gone),
            "a grab that may have committed marks its user"
        );
        assert!(marked(&granted));
        assert!(!marked(&refused));
        // without a replica there is nothing to mark
        let plain = Reads::new(
            lazy("postgres://nobody@127.0.0.1:9/p"),
            None,
            Duration::from_secs(2),
            None,
        );
        assert!(plain.pending(&gone).is_none());
    }
}

//! Background upkeep that runs on one instance at a time: several replicas share one
//! Postgres, and two of them vacuuming or purging at once only doubles the work. Each
//! job takes an advisory lock of its own (`Alone`) and steps aside while another
//! instance holds it.
//!
//! The frequent vacuum of the hottest table lives here too. Each grant leaves a dead
//! version of its campaign row; autovacuum's one-minute naptime (or autovacuum turned
//! off) lets those pile up until every decrement walks a long chain and grants slow
//! down several-fold. Vacuuming the small `campaigns` table every few seconds keeps
//! the hot row short.

use std::time::Duration;

use sqlx::{PgConnection, PgPool, Postgres, pool::PoolConnection};

const INTERVAL: Duration = Duration::from_secs(5);

/// The first key of voucherd's advisory locks ("vouc"). Jobs use Postgres' two-key
/// form, which never conflicts with the one-key locks sqlx's migrations take.
const LOCK_CLASS: i32 = 0x766f_7563;

/// The jobs that run on one instance at a time; the value is the lock's second key.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Job {
    HotVacuum = 1,
    IdempotencyPurge = 2,
}

/// A pooled connection holding a job's session-level advisory lock. Released with
/// `release`; dropped without it (an error, a cancelled task), the connection is
/// closed rather than returned, which ends its session and so frees the lock: a
/// pooled connection never keeps a job's lock for a later borrower.
pub(crate) struct Alone {
    conn: Option<PoolConnection<Postgres>>,
    job: Job,
}

impl Alone {
    /// Takes the job's lock if no other instance holds it; `None` at once otherwise.
    pub(crate) async fn try_take(pool: &PgPool, job: Job) -> Result<Option<Alone>, sqlx::Error> {
        // Held by `alone` before the question is sent: if this future is dropped
        // while it waits for the answer, the connection (which may hold the lock by
        // then) closes instead of going back to the pool.
        let mut alone = Alone {
            conn: Some(pool.acquire().await?),
            job,
        };
        let got = sqlx::query_scalar!(
            r#"SELECT pg_try_advisory_lock($1, $2) AS "got!""#,
            LOCK_CLASS,
            job as i32
        )
        .fetch_one(alone.conn())
        .await?;
        if got {
            Ok(Some(alone))
        } else {
            // Another instance has it: this session holds nothing, so the connection
            // goes back to the pool as it is.
            drop(alone.conn.take());
            Ok(None)
        }
    }

    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("held until released")
    }

    /// Frees the lock and returns the connection to the pool (or closes it if the
    /// unlock fails).
    /// Only once Postgres has said the lock is free does the connection leave `self`,
    /// so a release cut short (cancelled, failed) closes it like any other drop.
    pub(crate) async fn release(mut self) {
        let job = self.job as i32;
        let unlocked = sqlx::query_scalar!(
            r#"SELECT pg_advisory_unlock($1, $2) AS "unlocked!""#,
            LOCK_CLASS,
            job
        )
        .fetch_one(self.conn())
        .await;
        if matches!(unlocked, Ok(true)) {
            drop(self.conn.take());
        }
    }
}

impl Drop for Alone {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            conn.close_on_drop();
        }
    }
}

/// Ticks in a row without the vacuum's lock after which this instance vacuums anyway:
/// a holder whose host died keeps its session (and the lock) until TCP keepalive
/// ends it, which can take hours, and a hot row left unvacuumed that long slows
/// every grant. Two vacuums at once are safe (`SKIP_LOCKED`), only wasteful.
const VACUUM_WITHOUT_LOCK_AFTER: u32 = 12;

/// Vacuums `campaigns` every `INTERVAL` until the process stops, on one instance at a
/// time. `SKIP_LOCKED` makes it step aside rather than queue behind a lock; the
/// warning Postgres sends when it steps aside is expected, so it is not logged.
pub(crate) async fn run_hot_vacuum(pool: PgPool) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut missed = 0;
    loop {
        tick.tick().await;
        let vacuumed = match Alone::try_take(&pool, Job::HotVacuum).await {
            Ok(Some(mut alone)) => {
                missed = 0;
                let done = vacuum(alone.conn()).await;
                if done.is_ok() {
                    alone.release().await;
                }
                // Otherwise `alone` is dropped here and its connection closes.
                done
            }
            Ok(None) if missed + 1 >= VACUUM_WITHOUT_LOCK_AFTER => {
                missed = 0;
                vacuum_unlocked(&pool).await
            }
            Ok(None) => {
                missed += 1;
                Ok(())
            }
            Err(e) => Err(e),
        };
        if let Err(e) = vacuumed {
            tracing::debug!(error = %e, "campaigns vacuum skipped");
        }
    }
}

async fn vacuum_unlocked(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let done = vacuum(&mut conn).await;
    if done.is_err() {
        conn.close_on_drop();
    }
    done
}

/// On error the connection's settings are unknown: the caller drops `Alone`, which
/// closes it.
async fn vacuum(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SET client_min_messages = error")
        .execute(&mut *conn)
        .await?;
    let vacuumed = sqlx::query("VACUUM (SKIP_LOCKED) campaigns")
        .execute(&mut *conn)
        .await;
    // The connection goes back to the pool: restore what other users of it expect.
    sqlx::query("RESET client_min_messages")
        .execute(&mut *conn)
        .await?;
    vacuumed.map(drop)
}

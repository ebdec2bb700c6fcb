//! Background upkeep of the hottest table. Each grant leaves a dead version of its
//! campaign row; autovacuum's one-minute naptime (or autovacuum turned off) lets
//! those pile up until every decrement walks a long chain and grants slow down
//! several-fold. Vacuuming the small `campaigns` table every few seconds keeps the
//! hot row short.

use std::time::Duration;

use sqlx::PgPool;

const INTERVAL: Duration = Duration::from_secs(5);

/// Vacuums `campaigns` every `INTERVAL` until the process stops. `SKIP_LOCKED` makes
/// it step aside rather than queue behind a lock.
pub async fn run_hot_vacuum(pool: PgPool) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sqlx::query("VACUUM (SKIP_LOCKED) campaigns")
            .execute(&pool)
            .await
        {
            tracing::debug!(error = %e, "campaigns vacuum skipped");
        }
    }
}

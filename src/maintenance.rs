//! Background upkeep of the hottest table. Each grant leaves a dead version of its
//! campaign row; autovacuum's one-minute naptime (or autovacuum turned off) lets
//! those pile up until every decrement walks a long chain and grants slow down
//! several-fold. Vacuuming the small `campaigns` table every few seconds keeps the
//! hot row short.

use std::time::Duration;

use sqlx::PgPool;

const INTERVAL: Duration = Duration::from_secs(5);

/// Vacuums `campaigns` every `INTERVAL` until the process stops. `SKIP_LOCKED` makes
/// it step aside rather than queue behind a lock (another instance's vacuum, say);
/// the warning Postgres sends when it steps aside is expected, so it is not logged.
pub(crate) async fn run_hot_vacuum(pool: PgPool) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = vacuum(&pool).await {
            tracing::debug!(error = %e, "campaigns vacuum skipped");
        }
    }
}

async fn vacuum(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SET client_min_messages = error")
        .execute(&mut *conn)
        .await?;
    let vacuumed = sqlx::query("VACUUM (SKIP_LOCKED) campaigns")
        .execute(&mut *conn)
        .await;
    // The connection goes back to the pool: restore what other users of it expect,
    // or close it if that fails.
    if let Err(e) = sqlx::query("RESET client_min_messages")
        .execute(&mut *conn)
        .await
    {
        conn.close_on_drop();
        return Err(e);
    }
    vacuumed.map(drop)
}

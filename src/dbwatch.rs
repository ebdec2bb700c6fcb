//! Whether Postgres answers right now. While it does not, requests that need it are
//! refused at once with 503 and `Retry-After`, instead of each one waiting out the
//! pool's connection retries (seconds) only to be refused anyway.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use sqlx::{Connection, PgConnection, PgPool};

use crate::{
    AppState,
    error::{ApiError, ApiResult},
};

const PERIOD: Duration = Duration::from_millis(250);
const PATIENCE: Duration = Duration::from_secs(2);

/// Shared by every request; flipped only by `run`.
#[derive(Clone, Default)]
pub struct DbWatch(Arc<AtomicBool>);

impl DbWatch {
    pub fn is_down(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// 503 while Postgres is known to be down; nothing was done, retry later.
    pub fn check(&self) -> ApiResult<()> {
        if self.is_down() {
            Err(ApiError::Unavailable(
                "the database is unavailable; retry shortly",
            ))
        } else {
            Ok(())
        }
    }

    fn set_down(&self, down: bool) {
        if self.0.swap(down, Ordering::Relaxed) != down {
            if down {
                tracing::warn!("Postgres is unreachable: refusing database work with 503");
            } else {
                tracing::info!("Postgres answers again");
            }
        }
    }

    /// Pings Postgres over a connection of its own (outside the pool, so a busy pool
    /// cannot make it look down) every 250 ms. A refused or broken connection marks
    /// it down; a ping that is merely slow changes nothing, since slowness is the
    /// pool's timeouts' business and a false alarm would refuse healthy work.
    pub async fn run(self, pool: PgPool) {
        let options = pool.connect_options();
        let mut conn: Option<PgConnection> = None;
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match tokio::time::timeout(PATIENCE, PgConnection::connect_with(&options))
                    .await
                {
                    Ok(Ok(c)) => conn.insert(c),
                    Ok(Err(_)) => {
                        self.set_down(true);
                        continue;
                    }
                    Err(_) => continue,
                },
            };
            match tokio::time::timeout(PATIENCE, c.ping()).await {
                Ok(Ok(())) => self.set_down(false),
                Ok(Err(_)) => {
                    conn = None;
                    self.set_down(true);
                }
                Err(_) => conn = None,
            }
        }
    }
}

/// Route layer for routes that always need Postgres.
pub(crate) async fn gate(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> ApiResult<Response> {
    state.dbwatch.check()?;
    Ok(next.run(req).await)
}

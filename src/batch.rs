//! Grant batching: grabs waiting on the same campaign are committed together by a
//! writer task in one transaction of set-based statements, so the hot campaign row is
//! decremented once per batch instead of once per grant. Batches form by themselves:
//! a writer takes whatever is queued when it is free, so a lone grab goes at once and
//! batches grow only while a commit is in progress.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sqlx::{PgConnection, PgPool, Postgres, pool::PoolConnection};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::{
    campaigns::{self, CampaignRow},
    dbwatch::DbWatch,
    error::ApiError,
    events::EventType,
    vouchers::VoucherRow,
};

/// A grab ready to be granted: its voucher and its 201 body are prepared before it
/// is queued, so the batch only writes.
pub struct Prepared {
    pub scope: String,
    pub key: String,
    pub fingerprint: Vec<u8>,
    pub voucher: VoucherRow,
    pub body: Vec<u8>,
    pub event_id: Uuid,
    /// The `voucher.issued` event's data, already serialised.
    pub event: String,
}

/// How one queued grab ended.
#[derive(Debug)]
pub enum Settled {
    Granted,
    /// The key was already recorded (a retry of a committed grab, or in flight in
    /// another instance): the caller answers from the stored record.
    KeyTaken,
    Refused(ApiError),
}

struct Pending {
    grab: Prepared,
    reply: oneshot::Sender<Settled>,
}

struct Queue {
    tx: mpsc::UnboundedSender<Pending>,
}

/// Batch writers, one set per campaign, started on a campaign's first grab and
/// stopped after a minute without grabs.
#[derive(Clone)]
pub struct Batcher {
    db: PgPool,
    dbwatch: DbWatch,
    queues: Arc<Mutex<HashMap<Uuid, Queue>>>,
    max_batch: usize,
    writers: usize,
}

const IDLE: Duration = Duration::from_secs(60);

impl Batcher {
    pub fn new(db: PgPool, dbwatch: DbWatch, max_batch: usize, writers: usize) -> Self {
        Batcher {
            db,
            dbwatch,
            queues: Arc::default(),
            max_batch: max_batch.max(1),
            writers: writers.max(1),
        }
    }

    /// Queues a grab on its campaign and waits for its batch to settle.
    pub async fn submit(&self, campaign: &CampaignRow, grab: Prepared) -> Settled {
        let (reply, answer) = oneshot::channel();
        let mut pending = Pending { grab, reply };
        loop {
            let tx = {
                let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
                queues
                    .entry(campaign.id)
                    .or_insert_with(|| self.start(campaign.clone()))
                    .tx
                    .clone()
            };
            match tx.send(pending) {
                Ok(()) => break,
                // The writers stopped for idleness just now: start new ones.
                Err(mpsc::error::SendError(back)) => {
                    pending = back;
                    let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
                    if queues.get(&campaign.id).is_some_and(|q| q.tx.is_closed()) {
                        queues.remove(&campaign.id);
                    }
                }
            }
        }
        answer
            .await
            .unwrap_or(Settled::Refused(ApiError::Unavailable(
                "the grant batch was interrupted; retry with the same key",
            )))
    }

    fn start(&self, campaign: CampaignRow) -> Queue {
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(tokio::sync::Mutex::new((rx, VecDeque::new())));
        let campaign = Arc::new(campaign);
        for _ in 0..self.writers {
            let (rx, db, watch, campaign, queues) = (
                rx.clone(),
                self.db.clone(),
                self.dbwatch.clone(),
                campaign.clone(),
                self.queues.clone(),
            );
            let max = self.max_batch;
            tokio::spawn(async move {
                let mut conn = Held::default();
                // A failed batch halves the next one's size (its grabs come back as
                // retries): whatever made a batch fail (a timeout, a slow plan), the
                // writer keeps making progress rather than failing the same size again.
                let mut cap = max;
                while let Some(batch) = next_batch(&rx, cap).await {
                    metrics::histogram!("voucherd_grant_batch_size").record(batch.len() as f64);
                    cap = if settle(&db, &mut conn, &watch, &campaign, batch).await {
                        max.min(cap * 2)
                    } else {
                        (cap / 2).max(1)
                    };
                }
                let mut queues = queues.lock().unwrap_or_else(|p| p.into_inner());
                if queues
                    .get(&campaign.id)
                    .is_some_and(|q| q.tx.is_closed() || q.tx.strong_count() == 1)
                {
                    queues.remove(&campaign.id);
                }
            });
        }
        Queue { tx }
    }
}

type Inbox = tokio::sync::Mutex<(mpsc::UnboundedReceiver<Pending>, VecDeque<Pending>)>;

/// Takes what is queued now, up to `max`, with at most one grab per user: a user's
/// further grabs wait for the next batch, so each user's limit is checked exactly as
/// a single grant would check it. `None` after a minute without grabs.
async fn next_batch(inbox: &Inbox, max: usize) -> Option<Vec<Pending>> {
    let mut guard = inbox.lock().await;
    let (rx, carried) = &mut *guard;
    if carried.is_empty() {
        match tokio::time::timeout(IDLE, rx.recv()).await {
            Ok(Some(p)) => carried.push_back(p),
            _ => {
                rx.close();
                // Anything sent between the timeout and the close is still answered.
                while let Ok(p) = rx.try_recv() {
                    carried.push_back(p);
                }
                if carried.is_empty() {
                    return None;
                }
            }
        }
    }
    while carried.len() < max * 2
        && let Ok(p) = rx.try_recv()
    {
        carried.push_back(p);
    }
    let mut users = HashSet::new();
    let mut batch = Vec::new();
    let mut later = VecDeque::new();
    while let Some(p) = carried.pop_front() {
        if batch.len() < max && users.insert(p.grab.voucher.user_id.clone()) {
            batch.push(p);
        } else {
            later.push_back(p);
        }
    }
    *carried = later;
    Some(batch)
}

/// A writer's connection, kept while batches come back to back: the pool pings a
/// connection before lending it, a round trip that cost as much as the batch's own
/// call. A connection unused for `HELD_IDLE` goes back to the pool, so a writer
/// that was quiet (while Postgres may have restarted) gets a checked one.
#[derive(Default)]
struct Held(Option<(PoolConnection<Postgres>, Instant)>);

const HELD_IDLE: Duration = Duration::from_millis(250);

impl Held {
    async fn get(&mut self, db: &PgPool) -> Result<&mut PoolConnection<Postgres>, sqlx::Error> {
        if self
            .0
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() > HELD_IDLE)
        {
            self.0 = None;
        }
        let held = match self.0.take() {
            Some((conn, _)) => conn,
            None => db.acquire().await?,
        };
        Ok(&mut self.0.insert((held, Instant::now())).0)
    }

    /// After a failure the connection's state is unknown: close it rather than
    /// return it to the pool.
    fn discard(&mut self) {
        if let Some((mut conn, _)) = self.0.take() {
            conn.close_on_drop();
        }
    }
}

/// Commits one batch and answers every grab in it. Any database failure rolls the
/// whole batch back and every grab in it gets a retryable error with no effect.
/// Returns whether the batch committed.
async fn settle(
    db: &PgPool,
    held: &mut Held,
    watch: &DbWatch,
    campaign: &CampaignRow,
    batch: Vec<Pending>,
) -> bool {
    // Postgres is down: fail at once rather than wait out the pool's connect retries.
    let result = match watch.check() {
        Ok(()) => {
            let committed = match held.get(db).await {
                Ok(conn) => commit(conn, campaign, &batch).await,
                Err(e) => Err(e),
            };
            if committed.is_err() {
                held.discard();
            }
            committed.map_err(ApiError::from)
        }
        Err(e) => Err(e),
    };
    let committed = result.is_ok();
    let outcomes = match result {
        Ok(outcomes) => outcomes,
        Err(e) => {
            tracing::warn!(error = ?e, size = batch.len(), "grant batch failed; nothing was written");
            batch
                .iter()
                .map(|_| Settled::Refused(e.clone_refusal()))
                .collect()
        }
    };
    for (p, outcome) in batch.into_iter().zip(outcomes) {
        let _ = p.reply.send(outcome);
    }
    committed
}

/// What `grant_batch` reports (grabs numbered from 1 in batch order).
#[derive(sqlx::FromRow)]
struct BatchResult {
    /// Grabs whose key was claimed (the others were already recorded).
    o_claimed: Vec<i32>,
    /// Claimed grabs within their user's limit, in batch order.
    o_eligible: Vec<i32>,
    /// How many of `o_eligible`, from the front, were granted.
    o_granted: i32,
    /// Whether the campaign was open (not paused, inside its window).
    o_open: bool,
}

/// The batch: one call of `grant_batch` (migrations 0008 and 0009), which runs the
/// set-based statements in one implicit transaction and one round trip, taking the
/// campaign row last so it is locked only until the call commits.
async fn commit(
    conn: &mut PgConnection,
    campaign: &CampaignRow,
    batch: &[Pending],
) -> Result<Vec<Settled>, sqlx::Error> {
    let grabs: Vec<&Prepared> = batch.iter().map(|p| &p.grab).collect();
    let col = |f: fn(&Prepared) -> &str| grabs.iter().map(|g| f(g)).collect::<Vec<&str>>();
    let r: BatchResult = sqlx::query_as(
        "SELECT o_claimed, o_eligible, o_granted, o_open FROM grant_batch(
             $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    )
    .bind(campaign.id)
    .bind(campaign.per_user_limit)
    .bind(&campaign.discount)
    .bind(campaign.min_order_amount)
    .bind(col(|g| &g.scope))
    .bind(col(|g| &g.key))
    .bind(
        grabs
            .iter()
            .map(|g| g.fingerprint.as_slice())
            .collect::<Vec<_>>(),
    )
    .bind(grabs.iter().map(|g| g.body.as_slice()).collect::<Vec<_>>())
    .bind(grabs.iter().map(|g| g.voucher.id).collect::<Vec<_>>())
    .bind(col(|g| &g.voucher.code))
    .bind(col(|g| &g.voucher.user_id))
    .bind(
        grabs
            .iter()
            .map(|g| g.voucher.issued_at)
            .collect::<Vec<_>>(),
    )
    .bind(
        grabs
            .iter()
            .map(|g| g.voucher.expires_at)
            .collect::<Vec<_>>(),
    )
    .bind(grabs.iter().map(|g| g.event_id).collect::<Vec<_>>())
    .bind(col(|g| &g.event))
    .bind(EventType::VoucherIssued.as_str())
    .bind(EventType::CampaignSoldOut.as_str())
    .bind(Uuid::now_v7())
    .fetch_one(&mut *conn)
    .await?;

    let closed = if r.o_open {
        None
    } else {
        // Paused, not started or over: say which, from the row as it is now.
        Some(campaigns::refusal_of(&mut *conn, campaign.id).await?)
    };
    let mut outcome: Vec<Settled> = (0..batch.len()).map(|_| Settled::KeyTaken).collect();
    let at = |i: i32| usize::try_from(i - 1).ok().filter(|i| *i < batch.len());
    for i in r.o_claimed.iter().filter_map(|i| at(*i)) {
        outcome[i] = Settled::Refused(ApiError::LimitReached);
    }
    let granted = usize::try_from(r.o_granted).unwrap_or(0);
    for (n, i) in r.o_eligible.iter().enumerate() {
        if let Some(i) = at(*i) {
            outcome[i] = match (&closed, n < granted) {
                (_, true) => Settled::Granted,
                (Some(reason), false) => Settled::Refused(reason.clone_refusal()),
                (None, false) => Settled::Refused(ApiError::SoldOut),
            };
        }
    }
    Ok(outcome)
}

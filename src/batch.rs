//! Grant batching: grabs waiting on the same campaign are committed together by a
//! writer task in one transaction of set-based statements, so the hot campaign row is
//! decremented once per batch instead of once per grant. Batches form by themselves:
//! a writer takes whatever is queued when it is free, so a lone grab goes at once and
//! batches grow only while a commit is in progress.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use sqlx::{PgPool, Postgres, Transaction};
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
                while let Some(batch) = next_batch(&rx, max).await {
                    metrics::histogram!("voucherd_grant_batch_size").record(batch.len() as f64);
                    settle(&db, &watch, &campaign, batch).await;
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

/// Commits one batch and answers every grab in it. Any database failure rolls the
/// whole batch back and every grab in it gets a retryable error with no effect.
async fn settle(db: &PgPool, watch: &DbWatch, campaign: &CampaignRow, batch: Vec<Pending>) {
    // Postgres is down: fail at once rather than wait out the pool's connect retries.
    let result = match watch.check() {
        Ok(()) => commit(db, campaign, &batch).await.map_err(ApiError::from),
        Err(e) => Err(e),
    };
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
}

/// The batch transaction. Every statement is set-based over the batch; the campaign
/// row is taken last so it is locked only from the decrement to the commit.
async fn commit(
    db: &PgPool,
    campaign: &CampaignRow,
    batch: &[Pending],
) -> Result<Vec<Settled>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let n = batch.len();
    let grabs: Vec<&Prepared> = batch.iter().map(|p| &p.grab).collect();
    let mut outcome: Vec<Option<Settled>> = (0..n).map(|_| None).collect();

    // 1. Claim the keys, each with its response: a key already recorded is skipped
    //    (sorted, so concurrent batches take key locks in one order).
    let claimed: Vec<(String, String)> = sqlx::query_as(
        "INSERT INTO idempotency_keys (scope, key, fingerprint, status_code, response_body)
         SELECT s, k, f, 201, b FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[])
                AS t(s, k, f, b)
         ORDER BY s, k
         ON CONFLICT DO NOTHING
         RETURNING scope, key",
    )
    .bind(grabs.iter().map(|g| g.scope.as_str()).collect::<Vec<_>>())
    .bind(grabs.iter().map(|g| g.key.as_str()).collect::<Vec<_>>())
    .bind(
        grabs
            .iter()
            .map(|g| g.fingerprint.as_slice())
            .collect::<Vec<_>>(),
    )
    .bind(grabs.iter().map(|g| g.body.as_slice()).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    if claimed.len() < n {
        let claimed: HashSet<(&str, &str)> = claimed
            .iter()
            .map(|(s, k)| (s.as_str(), k.as_str()))
            .collect();
        for (i, g) in grabs.iter().enumerate() {
            if !claimed.contains(&(g.scope.as_str(), g.key.as_str())) {
                outcome[i] = Some(Settled::KeyTaken);
            }
        }
    }

    // 2. The per-user limit, one conditional upsert per user (one grab per user here).
    let live: Vec<usize> = (0..n).filter(|i| outcome[*i].is_none()).collect();
    let allowed: Vec<String> = sqlx::query_scalar(
        "INSERT INTO user_claims (campaign_id, user_id, claimed)
         SELECT $1, u, 1 FROM unnest($2::text[]) AS u ORDER BY u
         ON CONFLICT (campaign_id, user_id) DO UPDATE SET claimed = user_claims.claimed + 1
         WHERE user_claims.claimed < $3
         RETURNING user_id",
    )
    .bind(campaign.id)
    .bind(
        live.iter()
            .map(|i| grabs[*i].voucher.user_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(campaign.per_user_limit)
    .fetch_all(&mut *tx)
    .await?;
    let allowed: HashSet<String> = allowed.into_iter().collect();
    let mut eligible = Vec::with_capacity(live.len());
    for i in live {
        if allowed.contains(&grabs[i].voucher.user_id) {
            eligible.push(i);
        } else {
            outcome[i] = Some(Settled::Refused(ApiError::LimitReached));
        }
    }

    // 3 and 4. Vouchers and their events, for every grab still eligible.
    let rows: Vec<&VoucherRow> = eligible.iter().map(|i| &grabs[*i].voucher).collect();
    if !eligible.is_empty() {
        sqlx::query(
            "INSERT INTO vouchers (id, code, campaign_id, user_id, discount, min_order_amount,
                                   issued_at, expires_at)
             SELECT i, c, $1, u, $2, $3, t, e
             FROM unnest($4::uuid[], $5::text[], $6::text[], $7::timestamptz[], $8::timestamptz[])
                  AS x(i, c, u, t, e)",
        )
        .bind(campaign.id)
        .bind(&campaign.discount)
        .bind(campaign.min_order_amount)
        .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.code.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.issued_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.expires_at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        insert_events(
            &mut tx,
            EventType::VoucherIssued,
            eligible.iter().map(|i| grabs[*i].event_id).collect(),
            eligible.iter().map(|i| grabs[*i].event.as_str()).collect(),
        )
        .await?;
    }

    // 5. The stock: one conditional decrement by as many as are left, first come
    //    first served within the batch.
    let wanted = eligible.len() as i64;
    let taken: Option<(i64, i64, i64)> = if wanted == 0 {
        None
    } else {
        sqlx::query_as(
            "WITH cur AS (SELECT id, LEAST(remaining, $2) AS take FROM campaigns
                          WHERE id = $1 AND NOT paused AND starts_at <= now() AND ends_at > now()
                          FOR UPDATE)
             UPDATE campaigns c SET remaining = c.remaining - cur.take, issued = c.issued + cur.take
             FROM cur WHERE c.id = cur.id
             RETURNING cur.take, c.remaining, c.total_stock",
        )
        .bind(campaign.id)
        .bind(wanted)
        .fetch_optional(&mut *tx)
        .await?
    };
    if wanted > 0 {
        let (take, remaining, total) = match taken {
            Some(t) => t,
            None => {
                // Paused, not started or over: nothing in this batch is granted.
                let reason = campaigns::refusal_in(&mut tx, campaign.id).await?;
                drop(tx);
                return Ok(outcome
                    .into_iter()
                    .map(|o| match o {
                        Some(Settled::KeyTaken) => Settled::KeyTaken,
                        _ => Settled::Refused(reason.clone_refusal()),
                    })
                    .collect());
            }
        };
        let (granted, late) = eligible.split_at(take as usize);
        for i in granted {
            outcome[*i] = Some(Settled::Granted);
        }
        for i in late {
            outcome[*i] = Some(Settled::Refused(ApiError::SoldOut));
        }
        if !late.is_empty() {
            undo_late(
                &mut tx,
                campaign.id,
                late.iter().map(|i| grabs[*i]).collect(),
            )
            .await?;
        }
        if remaining == 0 && take > 0 {
            insert_events(
                &mut tx,
                EventType::CampaignSoldOut,
                vec![Uuid::now_v7()],
                vec![
                    serde_json::json!({"campaign_id": campaign.id, "total_stock": total})
                        .to_string()
                        .as_str(),
                ],
            )
            .await?;
        }
    }

    // Refusals record nothing: drop their key claims before committing.
    let refused: Vec<usize> = (0..n)
        .filter(|i| matches!(outcome[*i], Some(Settled::Refused(_))))
        .collect();
    if !refused.is_empty() {
        sqlx::query(
            "DELETE FROM idempotency_keys k USING unnest($1::text[], $2::text[]) AS r(s, k2)
             WHERE k.scope = r.s AND k.key = r.k2",
        )
        .bind(
            refused
                .iter()
                .map(|i| grabs[*i].scope.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            refused
                .iter()
                .map(|i| grabs[*i].key.as_str())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(outcome
        .into_iter()
        .map(|o| o.unwrap_or(Settled::Refused(ApiError::SoldOut)))
        .collect())
}

async fn insert_events(
    tx: &mut Transaction<'_, Postgres>,
    kind: EventType,
    ids: Vec<Uuid>,
    data: Vec<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO events (id, type, data) SELECT i, $1, d::jsonb FROM unnest($2::uuid[], $3::text[]) AS x(i, d)")
        .bind(kind.as_str())
        .bind(ids)
        .bind(data)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Removes what was written for grabs the stock ran out before: their vouchers,
/// events and one count each from their users' counters.
async fn undo_late(
    tx: &mut Transaction<'_, Postgres>,
    campaign: Uuid,
    late: Vec<&Prepared>,
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = late.iter().map(|g| g.voucher.id).collect();
    let event_ids: Vec<Uuid> = late.iter().map(|g| g.event_id).collect();
    let users: Vec<&str> = late.iter().map(|g| g.voucher.user_id.as_str()).collect();
    sqlx::query("DELETE FROM vouchers WHERE id = ANY($1)")
        .bind(&ids)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM events WHERE id = ANY($1)")
        .bind(&event_ids)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "DELETE FROM user_claims WHERE campaign_id = $1 AND user_id = ANY($2) AND claimed = 1",
    )
    .bind(campaign)
    .bind(&users)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE user_claims SET claimed = claimed - 1 WHERE campaign_id = $1 AND user_id = ANY($2)",
    )
    .bind(campaign)
    .bind(&users)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

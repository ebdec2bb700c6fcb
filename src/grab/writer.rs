//! Grant batching: grabs waiting on the same campaign are committed together by a
//! writer in one call of `grant_batches`, so the hot campaign row is decremented once
//! per batch instead of once per grant. Batches form by themselves: a writer takes
//! whatever is queued when it is free, so a lone grab goes at once and batches grow
//! only while a commit is in progress. A batch with room left takes the grabs of the
//! next campaigns in turn that no other batch is writing (one call, one commit for
//! many quiet campaigns; concurrent batches lock disjoint campaign rows).
//!
//! Launch night shapes the rest:
//! - The writers are one pool for all campaigns (`GRAB_WRITER_CONNECTIONS`), serving
//!   the campaigns with grabs queued in turn, and a writer with nothing to do holds no
//!   connection: any number of live campaigns leaves the rest of the pool to admin,
//!   redemption, wallet and readiness traffic.
//! - A campaign's queue is bounded in length and in the age of its oldest grab
//!   (`GRAB_QUEUE_MAX`, `GRAB_QUEUE_MAX_WAIT`); past either, a grab is refused at once
//!   with 503 `overloaded`, before any Postgres work.
//! - A grab is written only while someone waits for it: one whose caller has gone,
//!   or whose deadline (`GRAB_DEADLINE`) passed, is dropped when a batch forms. Once a
//!   batch is sent, its grabs are answered only with Postgres' outcome; where that is
//!   unknown (the connection broke mid-call) they get 409 `idempotency_key_in_use`.
//! - A commit that stalls trips a breaker: a batch committing for longer than
//!   `GRAB_COMMIT_STALL` refuses new grabs on its campaign at once with 503
//!   `overloaded` rather than queue them behind it; stalled batches on two campaigns
//!   or more mean Postgres itself is stalled (under synchronous replication, a standby
//!   gone until Patroni names another), and new grabs on every campaign are refused.
//!   One campaign's row held by a slow transaction never refuses the others. The
//!   grabs inside a stalled commit keep waiting for its outcome.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::{PgConnection, PgPool, Postgres, pool::PoolConnection};
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

use crate::{
    campaigns::row::CampaignRow, dbwatch::DbWatch, deadline::RequestClock, error::ApiError,
    events::EventType, idempotency::InFlightGuard, vouchers::VoucherRow,
};

/// A grab ready to be granted: its voucher is prepared before it is queued, so the
/// batch only writes. The key's record and the `voucher.issued` event are written
/// without copies of it (migration 0019).
pub struct Prepared {
    pub scope: String,
    pub key: String,
    pub fingerprint: Vec<u8>,
    pub voucher: VoucherRow,
}

/// How one queued grab ended.
#[derive(Debug)]
pub enum Settled {
    Granted,
    /// The key was already recorded (a retry of a committed grab): the caller answers
    /// from the stored record.
    KeyTaken,
    Refused(ApiError),
}

/// A queued grab with everything needed to answer it. The key's in-flight guard
/// travels with it, so a retry of the key on this instance waits for this grab's
/// outcome even after its own request has timed out or its client has gone.
struct Pending {
    grab: Prepared,
    queued: Instant,
    deadline: Instant,
    clock: RequestClock,
    guard: InFlightGuard,
    reply: oneshot::Sender<(Settled, InFlightGuard)>,
}

impl Pending {
    fn answer(self, outcome: Settled) {
        // Nobody listening: the guard is dropped with the returned value.
        let _ = self.reply.send((outcome, self.guard));
    }
}

/// The bounds a `Batcher` works within (all from settings).
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most grants in one batch.
    pub max_batch: usize,
    /// Writers (and so connections) for all campaigns together.
    pub connections: usize,
    /// Batches being written at once, of all campaigns (`GRAB_ACTIVE_BATCHES`): more
    /// writers than that would split the same grabs into smaller batches, each
    /// paying for its own commit. Only batches sent less than `ACTIVE_WHILE` ago
    /// count: one waiting on a held row or a stalled disk keeps no one waiting.
    pub active: usize,
    /// Batches of one campaign in flight at once: two let one batch form while
    /// another commits.
    pub per_campaign: usize,
    /// Grabs waiting on one campaign.
    pub queue_max: usize,
    /// How long the oldest waiting grab of a campaign may have waited.
    pub queue_max_wait: Duration,
    /// How long a batch may have been committing before new grabs are refused.
    pub commit_stall: Duration,
    /// How long after its request arrived a grab may still be sent to Postgres.
    pub deadline: Duration,
}

/// One campaign's waiting grabs.
struct Line {
    campaign: Arc<CampaignRow>,
    waiting: VecDeque<Pending>,
    /// Batches of this campaign being formed or written now.
    writing: usize,
    /// Whether the campaign is in the ready ring.
    ready: bool,
}

#[derive(Default)]
struct Lines {
    by_campaign: HashMap<Uuid, Line>,
    /// Campaigns with grabs waiting and a writer slot free, served in turn.
    ring: VecDeque<Uuid>,
}

impl Lines {
    /// Puts the campaign in the ring if it has work and a free slot; returns whether
    /// a writer should be woken.
    fn offer(&mut self, id: Uuid, per_campaign: usize) -> bool {
        let Some(line) = self.by_campaign.get_mut(&id) else {
            return false;
        };
        if !line.ready && !line.waiting.is_empty() && line.writing < per_campaign {
            line.ready = true;
            self.ring.push_back(id);
            return true;
        }
        // A line still in the ring stays, so the ring never names a line that a
        // later grab re-creates (which would put it in the ring twice).
        if line.waiting.is_empty() && line.writing == 0 && !line.ready {
            self.by_campaign.remove(&id);
        }
        false
    }
}

struct Inner {
    db: PgPool,
    dbwatch: DbWatch,
    limits: BatchLimits,
    lines: Mutex<Lines>,
    work: Notify,
    /// The campaigns of each batch now committing, and when it was sent, by writer.
    committing: Mutex<HashMap<u64, (Vec<Uuid>, Instant)>>,
    /// Pooled connections the writers hold now (for `/metrics`).
    held: Arc<AtomicUsize>,
}

/// How long a batch counts against `BatchLimits::active`: a commit takes a few
/// milliseconds; one still going after this waits on something else.
const ACTIVE_WHILE: Duration = Duration::from_millis(100);

impl Inner {
    /// A slot to write a batch in, if fewer than `limits.active` batches are active;
    /// if not, how long until one of them stops counting (unless it ends before).
    /// Checked and taken under one lock, so writers woken together never overshoot.
    fn try_start(&self, writer: u64) -> Result<Committing<'_>, Duration> {
        let now = Instant::now();
        let mut committing = lock(&self.committing);
        let mut active = 0;
        let mut oldest = Duration::ZERO;
        for (_, sent) in committing.values() {
            let age = now.duration_since(*sent);
            if age < ACTIVE_WHILE {
                active += 1;
                oldest = oldest.max(age);
            }
        }
        if active >= self.limits.active {
            return Err(ACTIVE_WHILE - oldest);
        }
        committing.insert(writer, (Vec::new(), now));
        Ok(Committing {
            inner: self,
            writer,
        })
    }

    /// Whether a grab on `campaign` meets a stalled commit: a stalled batch holding
    /// its campaign, or stalled batches on two campaigns or more (Postgres itself
    /// stalled). Batches are counted, not campaigns: one batch of several campaigns
    /// stalled behind one held row is one stall, and refuses only its own campaigns.
    fn commit_stalled(&self, campaign: Uuid, now: Instant) -> bool {
        let committing = lock(&self.committing);
        let stalled: Vec<&Vec<Uuid>> = committing
            .values()
            .filter(|(ids, sent)| {
                !ids.is_empty() && now.duration_since(*sent) > self.limits.commit_stall
            })
            .map(|(ids, _)| ids)
            .collect();
        if stalled.iter().any(|ids| ids.contains(&campaign)) {
            return true;
        }
        // Two stalled batches whose campaigns are not all one.
        stalled.len() >= 2 && {
            let first = stalled[0][0];
            stalled
                .iter()
                .flat_map(|ids| ids.iter())
                .any(|id| *id != first)
        }
    }
}

/// Marks one writer's batch as committing until dropped (whatever way the commit ends).
struct Committing<'a> {
    inner: &'a Inner,
    writer: u64,
}

impl Committing<'_> {
    /// The batch is being sent now, with these campaigns.
    fn sent(&self, campaigns: Vec<Uuid>) {
        lock(&self.inner.committing).insert(self.writer, (campaigns, Instant::now()));
    }
}

impl Drop for Committing<'_> {
    fn drop(&mut self) {
        lock(&self.inner.committing).remove(&self.writer);
    }
}

/// The grant writers of this instance, shared by all campaigns.
#[derive(Clone)]
pub struct Batcher(Arc<Inner>);

/// What the writers are doing right now, read when `/metrics` is scraped.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriterGauges {
    /// Pooled connections the writers hold.
    pub connections: usize,
    /// Most connections they may hold (`GRAB_WRITER_CONNECTIONS`).
    pub connections_max: usize,
    /// Grabs waiting in every campaign's queue.
    pub queued: usize,
    /// Campaigns with grabs waiting.
    pub campaigns_waiting: usize,
    /// How long the oldest waiting grab of any campaign has waited.
    pub oldest_wait: Duration,
    /// Batches sent to Postgres and not answered yet.
    pub committing: usize,
    /// How long the oldest of those has been committing.
    pub longest_commit: Duration,
}

impl Batcher {
    /// The writers' state now: one pass over the queues (one entry per campaign with
    /// grabs waiting) and over the batches committing, under their locks.
    pub fn gauges(&self) -> WriterGauges {
        let inner = &self.0;
        let now = Instant::now();
        let mut gauges = WriterGauges {
            connections: inner.held.load(Ordering::Relaxed),
            connections_max: inner.limits.connections,
            ..WriterGauges::default()
        };
        {
            let lines = lock(&inner.lines);
            for line in lines.by_campaign.values() {
                let Some(first) = line.waiting.front() else {
                    continue;
                };
                gauges.queued += line.waiting.len();
                gauges.campaigns_waiting += 1;
                gauges.oldest_wait = gauges.oldest_wait.max(now.duration_since(first.queued));
            }
        }
        let committing = lock(&inner.committing);
        // Slots still forming their batch (no campaigns yet) are not committing.
        let sent = || committing.values().filter(|(ids, _)| !ids.is_empty());
        gauges.committing = sent().count();
        gauges.longest_commit = sent()
            .map(|(_, sent)| now.duration_since(*sent))
            .max()
            .unwrap_or_default();
        gauges
    }

    /// Starts the writers (on the current tokio runtime).
    pub fn new(db: PgPool, dbwatch: DbWatch, limits: BatchLimits) -> Self {
        let limits = BatchLimits {
            max_batch: limits.max_batch.max(1),
            connections: limits.connections.max(1),
            per_campaign: limits.per_campaign.max(1),
            queue_max: limits.queue_max.max(1),
            ..limits
        };
        let limits = BatchLimits {
            active: limits.active.max(1),
            ..limits
        };
        let inner = Arc::new(Inner {
            db,
            dbwatch,
            limits,
            lines: Mutex::default(),
            work: Notify::new(),
            committing: Mutex::default(),
            held: Arc::default(),
        });
        for writer in 0..limits.connections {
            tokio::spawn(write_batches(inner.clone(), writer as u64));
        }
        Batcher(inner)
    }

    /// Queues a grab on its campaign and waits for its outcome, which comes back with
    /// the key's guard. Refused at once with `Overloaded` when the campaign's queue is
    /// past its bounds.
    pub async fn submit(
        &self,
        campaign: &Arc<CampaignRow>,
        grab: Prepared,
        clock: &RequestClock,
        guard: InFlightGuard,
    ) -> (Settled, Option<InFlightGuard>) {
        let inner = &self.0;
        let (reply, answer) = oneshot::channel();
        let now = Instant::now();
        if inner.commit_stalled(campaign.id, now) {
            metrics::counter!("voucherd_grabs_shed_total", "reason" => "commit_stalled")
                .increment(1);
            return (Settled::Refused(ApiError::Overloaded), Some(guard));
        }
        {
            let mut lines = lock(&inner.lines);
            let line = lines
                .by_campaign
                .entry(campaign.id)
                .or_insert_with(|| Line {
                    campaign: campaign.clone(),
                    waiting: VecDeque::new(),
                    writing: 0,
                    ready: false,
                });
            let oldest_waited = line
                .waiting
                .front()
                .map_or(Duration::ZERO, |p| now.duration_since(p.queued));
            if line.waiting.len() >= inner.limits.queue_max
                || oldest_waited > inner.limits.queue_max_wait
            {
                metrics::counter!("voucherd_grabs_shed_total", "reason" => "queue_full")
                    .increment(1);
                if line.waiting.is_empty() && line.writing == 0 && !line.ready {
                    lines.by_campaign.remove(&campaign.id);
                }
                return (Settled::Refused(ApiError::Overloaded), Some(guard));
            }
            line.campaign = campaign.clone();
            line.waiting.push_back(Pending {
                grab,
                queued: now,
                deadline: clock.arrived + inner.limits.deadline,
                clock: clock.clone(),
                guard,
                reply,
            });
            let pipelinable = line.ready && line.waiting.len() == PIPELINE_MIN;
            if lines.offer(campaign.id, inner.limits.per_campaign) || pipelinable {
                inner.work.notify_one();
            }
        }
        match answer.await {
            Ok((outcome, guard)) => (outcome, Some(guard)),
            // The writer task died (the runtime is shutting down): nothing was sent.
            Err(_) => (
                Settled::Refused(ApiError::Unavailable(
                    "the grant batch was interrupted; retry with the same key",
                )),
                None,
            ),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Campaigns one batch may span: each costs the batch a row lock, and a row held
/// elsewhere is waited on in a subtransaction of its own, of which a transaction
/// keeps 64 in memory.
const MAX_CAMPAIGNS_PER_BATCH: usize = 32;

/// One campaign's grabs in a batch.
struct Part {
    campaign: Arc<CampaignRow>,
    grabs: Vec<Pending>,
}

/// One writer: takes the next campaigns in turn, forms a batch, writes it, repeats.
/// Holds its connection only while there is work, so idle writers pin nothing.
async fn write_batches(inner: Arc<Inner>, writer: u64) {
    let mut held = Held::new(inner.held.clone());
    // A failed batch halves the writer's next one (its grabs come back as retries):
    // whatever made a batch fail (a timeout, a slow plan), the writer keeps making
    // progress rather than failing the same size again.
    let mut cap = inner.limits.max_batch;
    loop {
        let slot = match inner.try_start(writer) {
            Ok(slot) => slot,
            Err(wait) => {
                let notified = inner.work.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                // A batch that ended between the check above and `enable` notified
                // before this writer listened: the timeout bounds that wait too.
                let _ = tokio::time::timeout(wait, notified).await;
                continue;
            }
        };
        // A campaign no other batch is writing first: a batch that starts on one that
        // is being written must wait for its row and is written alone, so it is the
        // last resort (the hot campaign's second batch in flight).
        let first = {
            let mut lines = lock(&inner.lines);
            next_idle_campaign(&mut lines).or_else(|| next_campaign(&mut lines, PIPELINE_MIN))
        };
        let Some(first) = first else {
            drop(slot);
            held.release();
            let notified = inner.work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Work offered between the check above and `enable` is seen here.
            if next_campaign_ready(&inner) {
                continue;
            }
            notified.await;
            continue;
        };
        // The connection first, so a batch's deadlines are judged when it is sent.
        let conn = match inner.dbwatch.check() {
            Ok(()) => held.get(&inner.db).await.map_err(ApiError::from),
            Err(e) => Err(e),
        };
        let (parts, slots, expired) = form_batch(&inner, first, cap);
        for p in expired {
            let reason = if p.reply.is_closed() {
                "caller_gone"
            } else {
                "deadline"
            };
            metrics::counter!("voucherd_grabs_shed_total", "reason" => reason).increment(1);
            p.answer(Settled::Refused(ApiError::Overloaded));
        }
        let size: usize = parts.iter().map(|p| p.grabs.len()).sum();
        if size > 0 {
            metrics::histogram!("voucherd_grant_batch_size").record(size as f64);
            let committed = match conn {
                Ok(conn) => {
                    slot.sent(parts.iter().map(|p| p.campaign.id).collect());
                    let ok = settle(conn, parts, slot).await;
                    if !ok {
                        held.discard();
                    }
                    ok
                }
                // Nothing was sent: every grab may be retried as if never made.
                Err(e) => {
                    tracing::warn!(error = ?e, size, "no connection for a grant batch; nothing was written");
                    for p in parts.into_iter().flat_map(|p| p.grabs) {
                        p.answer(Settled::Refused(e.clone_refusal()));
                    }
                    false
                }
            };
            cap = if committed {
                inner.limits.max_batch.min(cap * 2)
            } else {
                (cap / 2).max(1)
            };
        }
        let mut lines = lock(&inner.lines);
        for id in slots {
            if let Some(line) = lines.by_campaign.get_mut(&id) {
                line.writing -= 1;
            }
            lines.offer(id, inner.limits.per_campaign);
        }
        // This batch no longer counts as active: a writer waiting for that (or for the
        // campaigns it held) may go.
        if next_in_ring(&lines, PIPELINE_MIN).is_some() {
            inner.work.notify_one();
        }
    }
}

/// Grabs a campaign must have waiting for a second batch of it to start while one
/// is in flight, when other campaigns have grabs waiting too: a smaller one would
/// cost a commit for a few grants (and with many campaigns live, every writer would
/// be writing such), and they are taken when the batch in flight is done. A campaign
/// alone (the hot one) gets its second batch at once.
const PIPELINE_MIN: usize = 16;

/// Where the next batch starts: the first campaign in the ring with no batch in
/// flight, or with at least `min` grabs waiting, or any if it is the only one.
fn next_in_ring(lines: &Lines, min: usize) -> Option<usize> {
    let ready = |id: &Uuid| lines.by_campaign.get(id).filter(|line| line.ready);
    let alone = lines.ring.iter().filter(|id| ready(id).is_some()).count() == 1;
    lines.ring.iter().position(|id| {
        ready(id).is_some_and(|line| alone || line.writing == 0 || line.waiting.len() >= min)
    })
}

/// The next campaign in turn (`next_in_ring`), with a writer slot taken on it; the
/// campaigns passed over keep their place in the ring.
fn next_campaign(lines: &mut Lines, min: usize) -> Option<Uuid> {
    let at = next_in_ring(lines, min)?;
    let id = lines.ring.remove(at)?;
    let line = lines.by_campaign.get_mut(&id)?;
    line.ready = false;
    line.writing += 1;
    Some(id)
}

/// The next campaign in turn with grabs waiting and no batch in flight, with a
/// writer slot taken on it; the campaigns passed over keep their place in the ring.
fn next_idle_campaign(lines: &mut Lines) -> Option<Uuid> {
    let at = lines.ring.iter().position(|id| {
        lines
            .by_campaign
            .get(id)
            .is_some_and(|line| line.ready && line.writing == 0)
    })?;
    let id = lines.ring.remove(at)?;
    let line = lines.by_campaign.get_mut(&id)?;
    line.ready = false;
    line.writing += 1;
    Some(id)
}

/// Whether `next_campaign` would find a campaign now.
fn next_campaign_ready(inner: &Inner) -> bool {
    next_in_ring(&lock(&inner.lines), PIPELINE_MIN).is_some()
}

/// Takes up to `max` live grabs, from `first` and then from the next campaigns in
/// turn while there is room (each joining campaign's writer slot is taken too; all
/// are returned, to be given back when the batch is done). At most one grab per user
/// and campaign: a user's further grabs wait for the next batch, so each user's
/// limit is checked exactly as a single grant would check it. Grabs whose caller has
/// gone or whose deadline has passed are taken out and returned apart, never to be
/// written.
fn form_batch(inner: &Inner, first: Uuid, max: usize) -> (Vec<Part>, Vec<Uuid>, Vec<Pending>) {
    let now = Instant::now();
    let mut lines = lock(&inner.lines);
    let mut parts = Vec::new();
    let mut slots = vec![first];
    let mut expired = Vec::new();
    let mut room = max;
    let mut id = first;
    loop {
        if let Some(line) = lines.by_campaign.get_mut(&id) {
            let grabs = take_grabs(line, room, now, &mut expired);
            room -= grabs.len();
            if !grabs.is_empty() {
                parts.push(Part {
                    campaign: line.campaign.clone(),
                    grabs,
                });
            }
        }
        // A campaign with another batch in flight is written alone: this batch will
        // wait for that one's row lock, and must hold no other campaign's row while
        // it waits.
        let pipelined = slots.len() == 1
            && lines
                .by_campaign
                .get(&first)
                .is_some_and(|line| line.writing > 1);
        if room == 0 || pipelined || slots.len() >= MAX_CAMPAIGNS_PER_BATCH {
            break;
        }
        // Room left: the next campaign in turn that no other batch is writing joins
        // this one, so concurrent batches lock disjoint sets of campaign rows and
        // never wait on each other.
        match next_idle_campaign(&mut lines) {
            Some(next) => {
                slots.push(next);
                id = next;
            }
            None => break,
        }
    }
    // More is waiting: let another writer form the next batch while this one writes.
    for id in &slots {
        if lines.offer(*id, inner.limits.per_campaign) {
            inner.work.notify_one();
        }
    }
    (parts, slots, expired)
}

/// Up to `max` grabs of one campaign's queue, at most one per user; expired ones go
/// to `expired`.
fn take_grabs(
    line: &mut Line,
    max: usize,
    now: Instant,
    expired: &mut Vec<Pending>,
) -> Vec<Pending> {
    let mut users = HashSet::new();
    let mut batch = Vec::new();
    let mut later = VecDeque::new();
    while let Some(mut p) = line.waiting.pop_front() {
        if p.reply.is_closed() || p.deadline <= now {
            expired.push(p);
        } else if batch.len() < max && users.insert(p.grab.voucher.user_id.clone()) {
            batch.push(p);
        } else {
            if batch.len() < max {
                // Deferred only because its user already has a grab in this batch:
                // its wait starts again, so one user's burst cannot age the whole
                // queue into refusing everyone (`GRAB_QUEUE_MAX_WAIT`).
                p.queued = now;
            }
            later.push_back(p);
            if batch.len() >= max {
                // The rest keep their order behind the deferred ones.
                later.append(&mut line.waiting);
                break;
            }
        }
    }
    line.waiting = later;
    batch
}

/// A writer's connection, kept while batches come back to back: the pool pings a
/// connection before lending it, a round trip that cost as much as the batch's own
/// call. It goes back to the pool as soon as the writer finds no work, and one unused
/// for `HELD_IDLE` is replaced by a checked one from the pool. `count` is the number
/// of writers holding one, for `/metrics`: every way a connection leaves (release,
/// discard, replacement, the writer task dropped) passes through `take`.
struct Held {
    conn: Option<(PoolConnection<Postgres>, Instant)>,
    count: Arc<AtomicUsize>,
}

const HELD_IDLE: Duration = Duration::from_millis(250);

impl Held {
    fn new(count: Arc<AtomicUsize>) -> Self {
        Held { conn: None, count }
    }

    fn take(&mut self) -> Option<PoolConnection<Postgres>> {
        let (conn, _) = self.conn.take()?;
        self.count.fetch_sub(1, Ordering::Relaxed);
        Some(conn)
    }

    async fn get(&mut self, db: &PgPool) -> Result<&mut PoolConnection<Postgres>, sqlx::Error> {
        if self
            .conn
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() > HELD_IDLE)
        {
            self.take();
        }
        let held = match self.take() {
            Some(conn) => conn,
            None => db.acquire().await?,
        };
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(&mut self.conn.insert((held, Instant::now())).0)
    }

    fn release(&mut self) {
        self.take();
    }

    /// After a failure the connection's state is unknown: close it rather than
    /// return it to the pool.
    fn discard(&mut self) {
        if let Some(mut conn) = self.take() {
            conn.close_on_drop();
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.take();
    }
}

/// Writes one batch and answers every grab in it; returns whether it committed. A
/// batch Postgres refused (it said so: a timeout, a lock wait) rolled back whole, and
/// every grab in it gets a retryable 503 with no effect. A batch whose outcome is
/// unknown (the connection broke after the call was sent) answers 409
/// `idempotency_key_in_use`: the keys' retries find out what committed.
async fn settle(conn: &mut PgConnection, parts: Vec<Part>, committing: Committing<'_>) -> bool {
    // A grab whose request has just been answered by the timeout is not sent.
    let mut sent = Vec::with_capacity(parts.len());
    for part in parts {
        let (grabs, timed_out): (Vec<Pending>, Vec<Pending>) =
            part.grabs.into_iter().partition(|p| p.clock.begin_commit());
        for p in timed_out {
            p.answer(Settled::Refused(ApiError::Overloaded));
        }
        if !grabs.is_empty() {
            sent.push(Part {
                campaign: part.campaign,
                grabs,
            });
        }
    }
    if sent.is_empty() {
        return true;
    }
    let result = commit(conn, &sent).await;
    drop(committing);
    let committed = result.is_ok();
    let grabs = sent.into_iter().flat_map(|p| p.grabs);
    match result {
        Ok(outcomes) => {
            for (p, outcome) in grabs.zip(outcomes) {
                p.answer(outcome);
            }
        }
        Err(e) => {
            let refusal = if matches!(e, sqlx::Error::Database(_)) {
                ApiError::from(e)
            } else {
                tracing::warn!(error = %e, "grant batch outcome unknown");
                ApiError::IdempotencyKeyInUse
            };
            tracing::warn!(error = ?refusal, "grant batch failed");
            for p in grabs {
                p.answer(Settled::Refused(refusal.clone_refusal()));
            }
        }
    }
    committed
}

/// The batch: one call of `grant_batches` (see migrations/README.md for the file that
/// holds its live body), which runs the set-based statements in one implicit
/// transaction and one round trip, taking the campaigns' rows last so they are locked
/// only until the call commits. Returns each grab's outcome, in the parts' order.
async fn commit(conn: &mut PgConnection, parts: &[Part]) -> Result<Vec<Settled>, sqlx::Error> {
    let grabs: Vec<&Prepared> = parts
        .iter()
        .flat_map(|p| p.grabs.iter().map(|g| &g.grab))
        .collect();
    let campaign_of: Vec<i32> = parts
        .iter()
        .enumerate()
        .flat_map(|(i, p)| std::iter::repeat_n(i as i32 + 1, p.grabs.len()))
        .collect();
    let col = |f: fn(&Prepared) -> &str| grabs.iter().map(|g| f(g)).collect::<Vec<&str>>();
    let fingerprints: Vec<&[u8]> = grabs.iter().map(|g| g.fingerprint.as_slice()).collect();
    let ids: Vec<Uuid> = grabs.iter().map(|g| g.voucher.id).collect();
    let issued_at: Vec<chrono::DateTime<chrono::Utc>> =
        grabs.iter().map(|g| g.voucher.issued_at).collect();
    let expires_at: Vec<chrono::DateTime<chrono::Utc>> =
        grabs.iter().map(|g| g.voucher.expires_at).collect();
    let campaigns: Vec<&CampaignRow> = parts.iter().map(|p| &*p.campaign).collect();
    let campaign_ids: Vec<Uuid> = campaigns.iter().map(|c| c.id).collect();
    let limits: Vec<i32> = campaigns.iter().map(|c| c.per_user_limit).collect();
    let discounts: Vec<&sqlx::types::Json<crate::domain::Discount>> =
        campaigns.iter().map(|c| &c.discount).collect();
    let min_orders: Vec<i64> = campaigns.iter().map(|c| c.min_order_amount).collect();
    let sold_out_ids: Vec<Uuid> = campaigns.iter().map(|_| Uuid::now_v7()).collect();
    // Named arguments: two adjacent arrays of one type can never swap unnoticed. The
    // output is never null (the function sets it before it returns). Arrays of
    // borrowed elements (`&str`, `&[u8]`) encode as the owned ones do, but the macro's
    // type check knows only owned elements: `as _` skips that check for them (and for
    // the JSON wrapper) rather than copy every key, code and body of every batch.
    let words: Vec<String> = sqlx::query_scalar!(
        r#"SELECT o_outcomes AS "o_outcomes!"
           FROM grant_batches(
             p_campaign_of => $1, p_scopes => $2, p_keys => $3, p_fingerprints => $4,
             p_ids => $5, p_codes => $6, p_users => $7, p_issued_at => $8,
             p_expires_at => $9, p_campaigns => $10, p_limits => $11, p_discounts => $12,
             p_min_orders => $13, p_sold_out_ids => $14, p_issued_type => $15,
             p_sold_out_type => $16)"#,
        &campaign_of,
        &col(|g| &g.scope) as _,
        &col(|g| &g.key) as _,
        &fingerprints as _,
        &ids,
        &col(|g| &g.voucher.code) as _,
        &col(|g| &g.voucher.user_id) as _,
        &issued_at,
        &expires_at,
        &campaign_ids,
        &limits,
        &discounts as _,
        &min_orders,
        &sold_out_ids,
        EventType::VoucherIssued.as_str(),
        EventType::CampaignSoldOut.as_str(),
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(outcomes(&words, grabs.len()))
}

/// Each grab's outcome from the function's word for it. A missing or unknown word
/// (never sent by the function) is a refusal that records nothing.
fn outcomes(words: &[String], n: usize) -> Vec<Settled> {
    (0..n)
        .map(|i| match words.get(i).map(String::as_str) {
            Some("granted") => Settled::Granted,
            Some("taken") => Settled::KeyTaken,
            Some("busy") => Settled::Refused(ApiError::IdempotencyKeyInUse),
            Some("limit_reached") => Settled::Refused(ApiError::LimitReached),
            Some("sold_out") => Settled::Refused(ApiError::SoldOut),
            Some("paused") => Settled::Refused(ApiError::CampaignNotActive("paused")),
            Some("scheduled") => Settled::Refused(ApiError::CampaignNotActive("not open yet")),
            Some("ended") => Settled::Refused(ApiError::CampaignNotActive("over")),
            // "stalled": its campaign's row was held elsewhere past the batch's wait.
            _ => Settled::Refused(ApiError::Overloaded),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writers' shared state without writers: only the bookkeeping is exercised
    /// (the pool is never connected).
    fn inner(active: usize) -> Inner {
        Inner {
            db: sqlx::postgres::PgPoolOptions::new()
                .connect_lazy("postgres://nobody@127.0.0.1:1/none")
                .unwrap(),
            dbwatch: DbWatch::default(),
            limits: BatchLimits {
                max_batch: 512,
                connections: 8,
                active,
                per_campaign: 2,
                queue_max: 2048,
                queue_max_wait: Duration::from_secs(1),
                commit_stall: Duration::from_secs(2),
                deadline: Duration::from_secs(5),
            },
            lines: Mutex::default(),
            work: Notify::new(),
            committing: Mutex::default(),
            held: Arc::default(),
        }
    }

    fn committing(inner: &Inner, writer: u64, campaigns: &[Uuid], age: Duration) {
        lock(&inner.committing).insert(writer, (campaigns.to_vec(), Instant::now() - age));
    }

    #[tokio::test]
    async fn at_most_the_active_batches_start_and_an_old_one_stops_counting() {
        let inner = inner(2);
        let first = inner.try_start(0).unwrap();
        let second = inner.try_start(1).unwrap();
        let wait = inner.try_start(2).err().expect("a third batch started");
        assert!(wait <= ACTIVE_WHILE, "{wait:?}");
        drop(first);
        let third = inner.try_start(2).unwrap();
        // One sent longer ago than ACTIVE_WHILE waits on something else: it no
        // longer keeps another batch from starting.
        drop(second);
        committing(
            &inner,
            1,
            &[Uuid::now_v7()],
            ACTIVE_WHILE + Duration::from_millis(50),
        );
        let fourth = inner.try_start(3).unwrap();
        assert!(inner.try_start(4).is_err());
        drop((third, fourth));
    }

    #[tokio::test]
    async fn stalled_batches_are_counted_not_their_campaigns() {
        let inner = inner(2);
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let stalled = inner.limits.commit_stall + Duration::from_millis(10);
        // A batch still forming (no campaigns yet) and young batches stall nothing.
        committing(&inner, 0, &[], stalled);
        committing(&inner, 1, &[a], Duration::from_millis(5));
        assert!(!inner.commit_stalled(a, Instant::now()));
        // One stalled batch over a and b refuses a and b, not c.
        committing(&inner, 1, &[a, b], stalled);
        assert!(inner.commit_stalled(a, Instant::now()));
        assert!(inner.commit_stalled(b, Instant::now()));
        assert!(!inner.commit_stalled(c, Instant::now()));
        // Two stalled batches of one campaign are that campaign's stall alone.
        committing(&inner, 1, &[a], stalled);
        committing(&inner, 2, &[a], stalled);
        assert!(!inner.commit_stalled(c, Instant::now()));
        // Two stalled batches over two campaigns: Postgres is stalled, every campaign
        // is refused.
        committing(&inner, 2, &[b], stalled);
        assert!(inner.commit_stalled(c, Instant::now()));
    }
}

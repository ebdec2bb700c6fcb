//! The concurrent half of idempotency, where care is needed: the `Store` that
//! reserves a key inside the effect's own transaction (`Store::begin` → `Reservation`
//! → `Reservation::commit`), the in-flight waits that queue a key's duplicates in
//! memory (`InFlight`), the caches of committed answers (in process, then Redis) and
//! their encoding, the lookup of a stored answer in Postgres, and the purge of
//! expired records.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{IdempotencyKey, REPLAYED_HEADER, Scope};
use crate::{
    deadline::RequestClock,
    error::{ApiError, ApiResult},
    maintenance::{Alone, Job},
    redis::Redis,
};

/// How long a duplicate waits for the in-flight original before answering 409.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(3);

/// A stored record. Status and body are set in the transaction that inserts the
/// row, so a committed row always has both; a grant's record has no body but names
/// its voucher, from which the body is rebuilt (migration 0019).
struct Record {
    fingerprint: Vec<u8>,
    status_code: Option<i16>,
    response_body: Option<Vec<u8>>,
    voucher_id: Option<Uuid>,
    /// Seconds until the purge may delete it.
    life_secs: f64,
}

/// What `Store::reserve` found.
pub(crate) enum NextAction {
    /// The key's answer, replayed.
    Replay(Response),
    /// Fresh work: the key's in-process guard, held until the outcome is settled.
    Proceed(InFlightGuard),
}

/// What a rate-limited request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhenLimited {
    /// Its answer from Redis if another instance shared it, else 429: the next step
    /// would have cost Postgres a read of the key.
    ReplayFromRedis,
    /// 429 at once, at no cost (the grab, where bots are refused by the thousand and
    /// a Redis round trip each would crowd out the snapshot reads).
    Refuse,
}

/// How fresh work for a key ended, for `Store::settle`.
pub(crate) enum Outcome {
    /// The effect committed with this answer.
    Committed { status: StatusCode, body: Vec<u8> },
    /// The key was already recorded (committed by an earlier request): replay it.
    AlreadyRecorded,
    /// Refused, with nothing recorded.
    Refused(ApiError),
}

/// The result of reserving a key.
pub enum Begun {
    /// The key's effect already committed: send this stored response again.
    Replay(Response),
    /// The key is ours: do the effect in `reservation.tx`, then `complete` and commit.
    Fresh(Box<Reservation>),
}

/// An open transaction holding the key. Dropping it without committing rolls the
/// effect back and leaves the key unrecorded, as every refusal must.
pub struct Reservation {
    pub tx: Transaction<'static, Postgres>,
    scope: Scope,
    key: IdempotencyKey,
    fingerprint: Vec<u8>,
    /// The response stored by `complete`, cached once the commit succeeds.
    answer: Option<(StatusCode, Vec<u8>)>,
    store: Store,
    clock: RequestClock,
    _in_flight: InFlightGuard,
}

impl Reservation {
    /// Stores the response in the effect's transaction; the caller commits.
    pub async fn complete(&mut self, status: StatusCode, body: &[u8]) -> ApiResult<()> {
        sqlx::query!(
            "UPDATE idempotency_keys SET status_code = $3, response_body = $4
             WHERE scope = $1 AND key = $2",
            self.scope.as_str(),
            self.key.as_str(),
            status.as_u16() as i16,
            body,
        )
        .execute(&mut *self.tx)
        .await?;
        self.answer = Some((status, body.to_vec()));
        Ok(())
    }

    /// Commits the effect. From here on the request is never answered 5xx: if the
    /// commit's outcome is unknown (the connection broke), it is 409
    /// `idempotency_key_in_use`, and a retry finds out what committed.
    pub async fn commit(self) -> ApiResult<()> {
        if !self.clock.begin_commit() {
            // Already answered 503 by the timeout: roll back, as that answer said.
            return Err(ApiError::Unavailable(
                "the request took too long and changed nothing",
            ));
        }
        self.tx.commit().await.map_err(|e| match e {
            sqlx::Error::Database(_) => ApiError::from(e),
            other => {
                tracing::warn!(error = %other, "commit outcome unknown");
                ApiError::IdempotencyKeyInUse
            }
        })?;
        if let Some((status, body)) = &self.answer {
            self.store
                .remember(
                    &self.scope,
                    &self.key,
                    &self.fingerprint,
                    *status,
                    body,
                    Share::ThisInstance,
                    self.store.expiry_of_fresh(self.clock.arrived),
                )
                .await;
        }
        Ok(())
    }
}

/// The idempotency store: Postgres for the records, plus an in-process map so that
/// duplicates arriving at one instance queue in memory instead of each holding a
/// database connection while they wait, plus a cache of recent committed answers.
#[derive(Clone)]
pub struct Store {
    in_flight: InFlight,
    /// Committed records never change (until purged after the TTL), so a copy may
    /// answer a retry without Postgres. In process first, then Redis.
    recent: Arc<quick_cache::sync::Cache<RecentKey, Arc<Stored>>>,
    redis: Option<Redis>,
    /// `IDEMPOTENCY_TTL`: how long Postgres is sure to keep a record. No cached copy
    /// outlives it, or a key purged there could replay an old answer here while a
    /// retry of it creates a new effect.
    ttl: Duration,
}

/// Where a committed answer is cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// In this process only: a fresh grant, whose retries mostly come back here,
    /// keeps the grant path free of a Redis round trip.
    ThisInstance,
    /// Also in Redis: an answer read back from Postgres, i.e. a real retry, which
    /// the other instances may see next.
    AllInstances,
}

/// A cached answer's key: scope and key.
#[derive(Clone, PartialEq, Eq, Hash)]
struct RecentKey(String, String);

impl RecentKey {
    fn new(scope: &Scope, key: &IdempotencyKey) -> Self {
        RecentKey(scope.as_str().to_string(), key.as_str().to_string())
    }
}

/// Looks a key up without allocating. Derived `Hash` of `&str` fields hashes exactly
/// as that of `String` fields, as `Equivalent` requires.
#[derive(Hash)]
struct RecentRef<'a>(&'a str, &'a str);

/// A committed answer, as cached.
pub(crate) struct Stored {
    /// When this copy stops answering: at most `RECENT_TTL` after it was cached, and
    /// never later than the record's own end in Postgres (created + `IDEMPOTENCY_TTL`).
    expires: Instant,
    fingerprint: Vec<u8>,
    status: u16,
    body: Vec<u8>,
}

impl Stored {
    fn replay(&self, fingerprint: &[u8]) -> ApiResult<Response> {
        if self.fingerprint != fingerprint {
            return Err(ApiError::IdempotencyKeyReused);
        }
        Ok(replayed_response(self.status as i16, self.body.clone()))
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.fingerprint.len() + 3 + self.body.len());
        v.push(self.fingerprint.len() as u8);
        v.extend_from_slice(&self.fingerprint);
        v.extend_from_slice(&self.status.to_be_bytes());
        v.extend_from_slice(&self.body);
        v
    }

    fn decode(v: &[u8], expires: Instant) -> Option<Stored> {
        let n = *v.first()? as usize;
        let fingerprint = v.get(1..1 + n)?.to_vec();
        let status = u16::from_be_bytes(v.get(1 + n..3 + n)?.try_into().ok()?);
        Some(Stored {
            expires,
            fingerprint,
            status,
            body: v.get(3 + n..)?.to_vec(),
        })
    }
}

/// How long a committed answer stays in the caches at most (shorter where the
/// record's own end in Postgres comes sooner).
const RECENT_TTL: Duration = Duration::from_secs(600);

/// Answers kept in process. quick_cache rather than moka: profiling the grant path
/// found moka's insert (with its table rehashes) at 7% of voucherd's CPU.
const RECENT_CAPACITY: usize = 200_000;

impl quick_cache::Equivalent<RecentKey> for RecentRef<'_> {
    fn equivalent(&self, k: &RecentKey) -> bool {
        self.0 == k.0 && self.1 == k.1
    }
}

fn redis_key(scope: &Scope, key: &IdempotencyKey) -> Vec<u8> {
    format!("voucherd:idem:{}\n{}", scope.as_str(), key.as_str()).into_bytes()
}

impl Store {
    pub fn new(redis: Option<Redis>, ttl: Duration) -> Self {
        Store {
            in_flight: InFlight::default(),
            recent: Arc::new(quick_cache::sync::Cache::new(RECENT_CAPACITY)),
            redis,
            ttl,
        }
    }

    /// When a copy of an answer committed for a request that arrived at `arrived`
    /// stops answering: the record was created after the request arrived, so it is
    /// kept at least until `arrived + IDEMPOTENCY_TTL`.
    pub fn expiry_of_fresh(&self, arrived: Instant) -> Instant {
        arrived + RECENT_TTL.min(self.ttl)
    }

    /// A replay from this process's cache, if this key's answer is there. Free
    /// enough to ask on every request.
    pub async fn cached(
        &self,
        scope: &Scope,
        key: &IdempotencyKey,
        fingerprint: &[u8],
    ) -> ApiResult<Option<Response>> {
        match self.recent.get(&RecentRef(scope.as_str(), key.as_str())) {
            Some(stored) if Instant::now() < stored.expires => stored.replay(fingerprint).map(Some),
            _ => Ok(None),
        }
    }

    /// A replay shared through Redis by another instance. Asked only where the
    /// alternative is Postgres, so fresh requests never pay a Redis round trip.
    async fn shared(
        &self,
        scope: &Scope,
        key: &IdempotencyKey,
        fingerprint: &[u8],
    ) -> ApiResult<Option<Response>> {
        let Some(redis) = &self.redis else {
            return Ok(None);
        };
        // Redis' own expiry was set to the record's remaining life when it was
        // shared; the copy kept here inherits it, counted from before the call.
        let asked = Instant::now();
        let Some(stored) = redis
            .get_bytes_with_ttl(&redis_key(scope, key))
            .await
            .and_then(|(v, ttl)| {
                let life = Duration::from_millis(ttl?).min(RECENT_TTL);
                Stored::decode(&v, asked + life)
            })
        else {
            return Ok(None);
        };
        let stored = Arc::new(stored);
        let resp = stored.replay(fingerprint)?;
        self.recent.insert(RecentKey::new(scope, key), stored);
        Ok(Some(resp))
    }

    /// Caches an answer that has committed until `expires`, here and, where `share`
    /// says so, in Redis for the other instances. One already at its end is not
    /// cached at all.
    #[allow(clippy::too_many_arguments)]
    pub async fn remember(
        &self,
        scope: &Scope,
        key: &IdempotencyKey,
        fingerprint: &[u8],
        status: StatusCode,
        body: &[u8],
        share: Share,
        expires: Instant,
    ) {
        let life = expires.saturating_duration_since(Instant::now());
        if life.is_zero() {
            return;
        }
        let stored = Arc::new(Stored {
            expires,
            fingerprint: fingerprint.to_vec(),
            status: status.as_u16(),
            body: body.to_vec(),
        });
        // Redis counts its expiry from when the write lands: a second less covers the
        // time the write takes to get there.
        let shared_life = life.saturating_sub(Duration::from_secs(1));
        if share == Share::AllInstances
            && let Some(redis) = &self.redis
            && shared_life >= Duration::from_millis(1)
        {
            redis
                .set_bytes_px(
                    &redis_key(scope, key),
                    &stored.encode(),
                    shared_life.as_millis() as u64,
                )
                .await;
        }
        self.recent.insert(RecentKey::new(scope, key), stored);
    }

    /// Whether a request with this key is in flight in this process now.
    pub fn is_in_flight(&self, scope: &Scope, key: &IdempotencyKey) -> bool {
        let map = self.in_flight.0.lock().unwrap_or_else(|p| p.into_inner());
        map.contains_key(&(scope.as_str().to_string(), key.as_str().to_string()))
    }

    /// Waits for any in-flight request with this key in this process to finish.
    pub async fn acquire(&self, scope: &Scope, key: &IdempotencyKey) -> ApiResult<InFlightGuard> {
        self.in_flight.acquire(scope, key).await
    }

    /// The stored answer: from Redis if another instance shared it, else from
    /// Postgres (caching it on the way); `None` if the key has no committed effect.
    pub async fn stored(
        &self,
        pool: &PgPool,
        scope: &Scope,
        key: &IdempotencyKey,
        fingerprint: &[u8],
    ) -> ApiResult<Option<Response>> {
        if let Some(resp) = self.shared(scope, key, fingerprint).await? {
            return Ok(Some(resp));
        }
        let Some((stored, resp)) = lookup(pool, scope, key, fingerprint, self.ttl).await? else {
            return Ok(None);
        };
        self.remember(
            scope,
            key,
            &stored.fingerprint,
            StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK),
            &stored.body,
            Share::AllInstances,
            stored.expires,
        )
        .await;
        Ok(Some(resp))
    }

    /// The protocol's entry, shared by every route: a replay this process can answer
    /// (before and after waiting for an in-flight twin of the key), else the key's
    /// in-process guard, held until the outcome is settled. `admit` (the rate limits)
    /// is asked only for fresh work; `limited` says whether a refused request may
    /// still be replayed from Redis.
    pub(crate) async fn reserve(
        &self,
        scope: &Scope,
        key: &IdempotencyKey,
        fingerprint: &[u8],
        admit: impl FnOnce() -> ApiResult<()>,
        limited: WhenLimited,
    ) -> ApiResult<NextAction> {
        // Retries of a finished request are the common case in a retry storm: answer
        // them from memory without queueing behind the per-key lock.
        if let Some(resp) = self.cached(scope, key, fingerprint).await? {
            return Ok(NextAction::Replay(resp));
        }
        let guard = self.in_flight.acquire(scope, key).await?;
        // Look again: the request we waited for may have just committed.
        if let Some(resp) = self.cached(scope, key, fingerprint).await? {
            return Ok(NextAction::Replay(resp));
        }
        if let Err(refusal) = admit() {
            if limited == WhenLimited::Refuse {
                return Err(refusal);
            }
            return match self.shared(scope, key, fingerprint).await? {
                Some(resp) => Ok(NextAction::Replay(resp)),
                None => Err(refusal),
            };
        }
        Ok(NextAction::Proceed(guard))
    }

    /// The protocol's exit for work committed elsewhere than a `Reservation` (the
    /// batched grant): the answer for the key's outcome, cached when it committed.
    pub(crate) async fn settle(
        &self,
        pool: &PgPool,
        scope: &Scope,
        key: &IdempotencyKey,
        fingerprint: &[u8],
        arrived: Instant,
        outcome: Outcome,
    ) -> ApiResult<Response> {
        match outcome {
            Outcome::Committed { status, body } => {
                self.remember(
                    scope,
                    key,
                    fingerprint,
                    status,
                    &body,
                    Share::ThisInstance,
                    self.expiry_of_fresh(arrived),
                )
                .await;
                Ok(json_bytes_response(status, body))
            }
            Outcome::AlreadyRecorded => self
                .stored(pool, scope, key, fingerprint)
                .await?
                // Recorded, then purged between the commit and this read.
                .ok_or(ApiError::IdempotencyKeyInUse),
            Outcome::Refused(e) => Err(e),
        }
    }

    /// Replays a committed key, or opens the effect's transaction with the key reserved.
    /// `admit` (the rate limits) is asked once the key is known not to be answered
    /// from this process, before anything costs Postgres: a refused request is still
    /// replayed if Redis holds its answer, else refused. `precheck` runs after the
    /// stored lookup: a refusal it returns (validation) is answered without a
    /// transaction and without recording the key, yet never hides the replay of an
    /// effect that did commit. A duplicate of an in-flight request waits for it (in
    /// memory here, on the unique index across instances) and then replays; past the
    /// bound it gets 409.
    #[allow(clippy::too_many_arguments)]
    pub async fn begin(
        &self,
        pool: &PgPool,
        scope: &Scope,
        key: &IdempotencyKey,
        fingerprint: &[u8],
        clock: &RequestClock,
        admit: impl FnOnce() -> ApiResult<()>,
        precheck: impl FnOnce() -> ApiResult<()>,
    ) -> ApiResult<Begun> {
        let guard = match self
            .reserve(scope, key, fingerprint, admit, WhenLimited::ReplayFromRedis)
            .await?
        {
            NextAction::Replay(resp) => return Ok(Begun::Replay(resp)),
            NextAction::Proceed(guard) => guard,
        };
        if let Some(resp) = self.stored(pool, scope, key, fingerprint).await? {
            return Ok(Begun::Replay(resp));
        }
        precheck()?;
        let mut tx = crate::begin(pool).await?;
        let reserved = sqlx::query!(
            "INSERT INTO idempotency_keys (scope, key, fingerprint) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            scope.as_str(),
            key.as_str(),
            fingerprint,
        )
        .execute(&mut *tx)
        .await
        .map_err(|e| match ApiError::from(e) {
            // The lock wait bound elapsed behind another instance's transaction.
            ApiError::Unavailable(_) => ApiError::IdempotencyKeyInUse,
            other => other,
        })?
        .rows_affected()
            == 1;
        if reserved {
            return Ok(Begun::Fresh(Box::new(Reservation {
                tx,
                scope: scope.clone(),
                key: key.clone(),
                fingerprint: fingerprint.to_vec(),
                answer: None,
                store: self.clone(),
                clock: clock.clone(),
                _in_flight: guard,
            })));
        }
        // Another instance committed this key while we waited on the index.
        tx.rollback().await?;
        match self.stored(pool, scope, key, fingerprint).await? {
            Some(resp) => Ok(Begun::Replay(resp)),
            None => Err(ApiError::IdempotencyKeyInUse),
        }
    }
}

/// Reads a committed record from Postgres: the record and its replay response. The
/// record's remaining life (until created + `ttl`, by Postgres' clock) bounds how long
/// a copy of it may be cached.
async fn lookup(
    pool: &PgPool,
    scope: &Scope,
    key: &IdempotencyKey,
    fingerprint: &[u8],
    ttl: Duration,
) -> ApiResult<Option<(Stored, Response)>> {
    // The remaining life is counted from before the question: Postgres measured it
    // at some instant after this one.
    let asked = Instant::now();
    let record: Option<Record> = sqlx::query_as!(
        Record,
        r#"SELECT fingerprint, status_code, response_body, voucher_id,
                  GREATEST(0, EXTRACT(EPOCH FROM
                      created_at + make_interval(secs => $3) - now()))::float8 AS "life_secs!"
           FROM idempotency_keys
           WHERE scope = $1 AND key = $2"#,
        scope.as_str(),
        key.as_str(),
        ttl.as_secs_f64(),
    )
    .fetch_optional(pool)
    .await?;
    let Some(Record {
        fingerprint: stored,
        status_code: Some(status_code),
        response_body,
        voucher_id,
        life_secs,
    }) = record
    else {
        return Ok(None);
    };
    let body = match (response_body, voucher_id) {
        (Some(body), _) => body,
        (None, Some(voucher)) => {
            let mut conn = pool.acquire().await?;
            match crate::vouchers::by_ids(&mut conn, &[voucher])
                .await?
                .first()
            {
                Some(row) => row.issued_body()?,
                None => return Ok(None),
            }
        }
        (None, None) => return Ok(None),
    };
    let life = Duration::try_from_secs_f64(life_secs)
        .unwrap_or_default()
        .min(RECENT_TTL);
    let stored = Stored {
        expires: asked + life,
        fingerprint: stored,
        status: status_code as u16,
        body,
    };
    let resp = stored.replay(fingerprint)?;
    Ok(Some((stored, resp)))
}

fn replayed_response(status_code: i16, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status_code as u16).unwrap_or(StatusCode::OK);
    let mut resp = json_bytes_response(status, body);
    resp.headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    resp
}

/// A JSON response from bytes already serialised (and stored), so the first answer
/// and every replay are byte-for-byte the same.
pub(crate) fn json_bytes_response(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// Deletes records older than the TTL in bounded batches, so the purge never holds
/// long locks or bloats one transaction. One instance purges at a time: `None` when
/// another one is purging now.
pub async fn purge_expired(pool: &PgPool, ttl: Duration) -> Result<Option<u64>, sqlx::Error> {
    let Some(mut alone) = Alone::try_take(pool, Job::IdempotencyPurge).await? else {
        return Ok(None);
    };
    let purged = purge_batches(alone.conn(), ttl).await;
    alone.release().await;
    purged.map(Some)
}

async fn purge_batches(conn: &mut PgConnection, ttl: Duration) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let n = sqlx::query!(
            "DELETE FROM idempotency_keys WHERE ctid IN (
                 SELECT ctid FROM idempotency_keys
                 WHERE created_at < now() - make_interval(secs => $1)
                 LIMIT 5000)",
            ttl.as_secs_f64(),
        )
        .execute(&mut *conn)
        .await?
        .rows_affected();
        total += n;
        if n < 5000 {
            return Ok(total);
        }
    }
}

/// Runs `purge_expired` every minute until the process stops.
pub(crate) async fn run_purger(pool: PgPool, ttl: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        match purge_expired(&pool, ttl).await {
            Ok(None | Some(0)) => {}
            Ok(Some(n)) => tracing::info!(purged = n, "expired idempotency keys purged"),
            Err(e) => tracing::warn!(error = %e, "idempotency purge failed; will retry"),
        }
    }
}

type InFlightKey = (String, String);
type InFlightMap = HashMap<InFlightKey, Arc<tokio::sync::Mutex<()>>>;

/// Per-key async mutexes for requests in flight in this process.
#[derive(Clone, Default)]
struct InFlight(Arc<Mutex<InFlightMap>>);

pub struct InFlightGuard {
    owner: InFlight,
    key: InFlightKey,
    lock: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl InFlight {
    async fn acquire(&self, scope: &Scope, key: &IdempotencyKey) -> ApiResult<InFlightGuard> {
        let k = (scope.as_str().to_string(), key.as_str().to_string());
        let mutex = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(k.clone()).or_default().clone()
        };
        let mut guard = InFlightGuard {
            owner: self.clone(),
            key: k,
            lock: None,
        };
        match tokio::time::timeout(IN_FLIGHT_WAIT, mutex.lock_owned()).await {
            Ok(lock) => {
                guard.lock = Some(lock);
                Ok(guard)
            }
            // Dropping the guard still tidies the map entry.
            Err(_) => Err(ApiError::IdempotencyKeyInUse),
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.lock.take();
        let mut map = self.owner.0.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map's own handle left: nobody holds or awaits this key.
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.key);
        }
    }
}

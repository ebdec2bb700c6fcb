//! The live launch view: what this instance sees of one campaign, once a second, sent
//! to every admin watching it (`GET /v1/admin/campaigns/{id}/live`, server-sent
//! events). However many people watch, a campaign costs one Postgres read per second
//! per instance; while nothing is watched a grab costs one atomic load, while some
//! campaign is, a shared read lock and a map lookup.

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{Path, State},
    http::{StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::watch;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    AppState,
    auth::Admin,
    campaigns::row::{self, CampaignStatus},
    dbclock::DbClock,
    deadline::RequestClock,
    domain::CampaignId,
    error::{ApiError, ApiResult},
};

/// How often a frame is sent, and the period its figures cover.
const TICK: Duration = Duration::from_secs(1);

/// The live view's route, registered with its documentation.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(live))
}

/// One second of one campaign as this instance saw it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LiveFrame {
    /// The instance that measured these figures (`INSTANCE_NAME`): behind a balancer
    /// each replica reports only its own grabs.
    pub instance: String,
    /// When the frame was made, by Postgres' clock as last measured.
    pub at: DateTime<Utc>,
    /// The period the counts below cover, in seconds (about one).
    pub interval_seconds: f64,
    /// The campaign's counters, read from Postgres for this frame; absent when the
    /// read failed (then `postgres` says why).
    pub campaign: Option<LiveCampaign>,
    /// `ok`, or `unavailable` when this frame's read of the campaign failed.
    pub postgres: &'static str,
    /// Sequence of this frame from its ticker (from 0): a watcher that reconnects
    /// and is sent a frame it has already seen can tell.
    pub seq: u64,
    /// Grabs answered in the period (every outcome below, and the timeouts).
    pub requests: u64,
    /// Vouchers granted in the period.
    pub grants: u64,
    /// Grants replayed for a retried key in the period.
    pub replays: u64,
    /// Refusals in the period by problem code (`sold_out`, `limit_reached`,
    /// `overloaded`, `timeout`, …), 5xx included.
    pub refusals: BTreeMap<&'static str, u64>,
    /// Grabs answered with a 5xx in the period (also counted in `refusals`).
    pub errors_5xx: u64,
    /// Grabs whose client left before an answer (not in `requests`): a batched
    /// grant may still have committed, and shows in the stock.
    pub abandoned: u64,
    /// The 99th percentile of the period's grab latencies, in milliseconds (to within
    /// 10%); absent when there were no grabs.
    pub p99_ms: Option<f64>,
}

/// The campaign's counters, exact as of the frame's read.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LiveCampaign {
    pub name: String,
    pub status: CampaignStatus,
    pub total_stock: i64,
    pub remaining: i64,
    pub issued: i64,
}

/// The campaigns being watched on this instance, each with the tally of its grabs
/// since the last frame.
#[derive(Clone)]
pub struct Live(Arc<Inner>);

struct Inner {
    db: PgPool,
    clock: DbClock,
    instance: String,
    /// How long a request may run: a grab dropped past it was answered 503 `timeout`
    /// by the deadline; one dropped before it lost its client.
    request_timeout: Duration,
    watched: RwLock<HashMap<Uuid, Arc<Watched>>>,
    /// `watched.len()`, read without the lock by every grab.
    watching: AtomicUsize,
    /// Set once, at shutdown: every stream ends and every ticker stops.
    closing: watch::Sender<bool>,
}

struct Watched {
    tally: Mutex<Tally>,
    /// The latest frame, serialized once for every watcher; `None` before the first.
    frames: watch::Sender<Option<Arc<str>>>,
}

#[derive(Default)]
struct Tally {
    outcomes: BTreeMap<&'static str, u64>,
    errors_5xx: u64,
    abandoned: u64,
    latency: Vec<u64>,
}

/// Latency buckets: each bound 10% above the one before, from 100 µs to about 60 s,
/// so a p99 is told to within 10% from 140 counters.
const BUCKET_FIRST_US: f64 = 100.0;
const BUCKET_GROWTH: f64 = 1.1;
const BUCKETS: usize = 140;

fn bucket_of(elapsed: Duration) -> usize {
    let us = elapsed.as_secs_f64() * 1e6;
    if us <= BUCKET_FIRST_US {
        return 0;
    }
    ((us / BUCKET_FIRST_US).ln() / BUCKET_GROWTH.ln()).ceil() as usize
}

fn bucket_bound_ms(bucket: usize) -> f64 {
    BUCKET_FIRST_US * BUCKET_GROWTH.powi(bucket as i32) / 1000.0
}

impl Tally {
    fn record(&mut self, outcome: &'static str, status: StatusCode, elapsed: Duration) {
        *self.outcomes.entry(outcome).or_default() += 1;
        if status.is_server_error() {
            self.errors_5xx += 1;
        }
        if self.latency.is_empty() {
            self.latency = vec![0; BUCKETS];
        }
        self.latency[bucket_of(elapsed).min(BUCKETS - 1)] += 1;
    }

    /// The bound of the bucket holding the 99th percentile.
    fn p99_ms(&self) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        // the smallest bucket with at least 99% of the grabs at or below it
        let wanted = total - total / 100;
        let mut seen = 0;
        self.latency.iter().enumerate().find_map(|(i, n)| {
            seen += n;
            (seen >= wanted).then(|| bucket_bound_ms(i))
        })
    }
}

impl Live {
    pub(crate) fn new(
        db: PgPool,
        clock: DbClock,
        instance: String,
        request_timeout: Duration,
    ) -> Self {
        Live(Arc::new(Inner {
            db,
            clock,
            instance,
            request_timeout,
            watched: RwLock::default(),
            watching: AtomicUsize::new(0),
            closing: watch::Sender::new(false),
        }))
    }

    /// Ends every live stream (their responses complete) and stops the tickers.
    pub(crate) fn close(&self) {
        self.0.closing.send_replace(true);
    }

    /// Starts timing a grab of `campaign`, if anyone watches it here.
    pub(crate) fn grab(&self, campaign: CampaignId, clock: &RequestClock) -> Option<GrabTiming> {
        if self.0.watching.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let watched = self
            .0
            .watched
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&campaign.0)?
            .clone();
        Some(GrabTiming {
            watched,
            clock: clock.clone(),
            request_timeout: self.0.request_timeout,
            done: false,
        })
    }

    /// The frames of `campaign`: the first watcher starts its ticker, the last one to
    /// leave stops it.
    fn subscribe(&self, campaign: CampaignId) -> watch::Receiver<Option<Arc<str>>> {
        let mut watched = self.0.watched.write().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = watched.get(&campaign.0) {
            return w.frames.subscribe();
        }
        let (frames, receiver) = watch::channel(None);
        let w = Arc::new(Watched {
            tally: Mutex::default(),
            frames,
        });
        watched.insert(campaign.0, w.clone());
        self.0.watching.store(watched.len(), Ordering::Relaxed);
        tokio::spawn(self.clone().tick(campaign, w));
        receiver
    }

    /// Sends a frame every `TICK` until nobody watches. Whether anyone still watches
    /// is decided under the map's lock, so a watcher arriving at that moment either
    /// finds this ticker still registered or starts a new one.
    async fn tick(self, campaign: CampaignId, w: Arc<Watched>) {
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = Instant::now();
        let mut closing = self.0.closing.subscribe();
        let mut seq = 0;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = closing.wait_for(|c| *c) => break,
            }
            {
                let mut watched = self.0.watched.write().unwrap_or_else(|p| p.into_inner());
                if w.frames.receiver_count() == 0 {
                    self.forget(campaign, &w, &mut watched);
                    return;
                }
            }
            let read = row::fetch_measuring_clock(&self.0.db, campaign, &self.0.clock).await;
            // The first frame (sent at once, for the stock) covers no period: grabs
            // that came before the first watcher were never timed.
            let tally = if seq == 0 {
                Tally::default()
            } else {
                std::mem::take(&mut *w.tally.lock().unwrap_or_else(|p| p.into_inner()))
            };
            let now = Instant::now();
            let interval = if seq == 0 { Duration::ZERO } else { now - last };
            let frame = self.frame(read, &tally, interval, seq);
            last = now;
            seq += 1;
            match serde_json::to_string(&frame) {
                Ok(json) => {
                    w.frames.send_replace(Some(json.into()));
                }
                Err(e) => tracing::error!(error = %e, "live frame not serializable"),
            }
        }
        let mut watched = self.0.watched.write().unwrap_or_else(|p| p.into_inner());
        self.forget(campaign, &w, &mut watched);
    }

    /// Removes this ticker's entry, not one a later watcher registered after it.
    fn forget(
        &self,
        campaign: CampaignId,
        w: &Arc<Watched>,
        watched: &mut HashMap<Uuid, Arc<Watched>>,
    ) {
        if watched.get(&campaign.0).is_some_and(|e| Arc::ptr_eq(e, w)) {
            watched.remove(&campaign.0);
        }
        self.0.watching.store(watched.len(), Ordering::Relaxed);
    }

    fn frame(
        &self,
        read: Result<Option<row::CampaignRow>, sqlx::Error>,
        tally: &Tally,
        interval: Duration,
        seq: u64,
    ) -> LiveFrame {
        let at = self.0.clock.estimate();
        let (campaign, postgres) = match read {
            Ok(Some(r)) => (
                Some(LiveCampaign {
                    status: r.status(at),
                    name: r.name,
                    total_stock: r.total_stock,
                    remaining: r.remaining,
                    issued: r.issued,
                }),
                "ok",
            ),
            // deleted campaigns do not exist; a missing row is a read gone wrong
            Ok(None) | Err(_) => (None, "unavailable"),
        };
        let count = |o: &str| tally.outcomes.get(o).copied().unwrap_or(0);
        LiveFrame {
            instance: self.0.instance.clone(),
            at,
            interval_seconds: interval.as_secs_f64(),
            seq,
            campaign,
            postgres,
            requests: tally.outcomes.values().sum(),
            grants: count("granted"),
            replays: count("replayed"),
            refusals: tally
                .outcomes
                .iter()
                .filter(|(o, _)| !matches!(**o, "granted" | "replayed"))
                .map(|(o, n)| (*o, *n))
                .collect(),
            errors_5xx: tally.errors_5xx,
            abandoned: tally.abandoned,
            p99_ms: tally.p99_ms().map(|ms| (ms * 100.0).round() / 100.0),
        }
    }
}

/// One watched grab in flight. Finished with its answer; dropped unfinished, it was
/// cut off: by the request deadline (answered 409 `idempotency_key_in_use` if its
/// commit was sent, else 503 `timeout`) or by its client leaving.
pub(crate) struct GrabTiming {
    watched: Arc<Watched>,
    clock: RequestClock,
    request_timeout: Duration,
    done: bool,
}

impl GrabTiming {
    pub(crate) fn finish(mut self, outcome: &'static str, status: StatusCode) {
        self.done = true;
        self.record(outcome, status);
    }

    fn record(&self, outcome: &'static str, status: StatusCode) {
        self.watched
            .tally
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(outcome, status, self.clock.arrived.elapsed());
    }
}

impl Drop for GrabTiming {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.clock.arrived.elapsed() < self.request_timeout {
            // no answer was sent, so neither a refusal nor a 5xx
            self.watched
                .tally
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .abandoned += 1;
        } else if self.clock.is_committing() {
            self.record("idempotency_key_in_use", StatusCode::CONFLICT);
        } else {
            self.record("timeout", StatusCode::SERVICE_UNAVAILABLE);
        }
    }
}

#[utoipa::path(get, path = "/v1/admin/campaigns/{id}/live", operation_id = "watchCampaignLive", tag = "admin",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, content_type = "text/event-stream", body = LiveFrame,
         description = "server-sent events, one `frame` event a second whose data is a LiveFrame (JSON); comments keep the connection alive"),
        (status = 401, body = crate::error::Problem), (status = 403, body = crate::error::Problem),
        (status = 404, description = "campaign_not_found", body = crate::error::Problem)),
    security(("admin" = [])))]
async fn live(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = CampaignId::parse(&id)?;
    row::fetch(&state.db, id)
        .await?
        .ok_or(ApiError::CampaignNotFound)?;
    let frames = state.live.subscribe(id);
    let sse = Sse::new(frame_events(frames, state.live.0.closing.subscribe()))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)));
    // a proxy that buffers would hold every frame back
    Ok((
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        sse,
    )
        .into_response())
}

/// Each new frame as one `frame` event; a watcher that falls behind gets the latest.
/// The stream ends at shutdown.
fn frame_events(
    frames: watch::Receiver<Option<Arc<str>>>,
    closing: watch::Receiver<bool>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    // a watcher joining a running ticker gets its latest frame at once
    futures::stream::unfold(
        (frames, closing, true),
        |(mut frames, mut closing, first)| async move {
            let data = loop {
                if *closing.borrow() {
                    return None;
                }
                if !(first && frames.borrow().is_some()) {
                    tokio::select! {
                        changed = frames.changed() => changed.ok()?,
                        _ = closing.wait_for(|c| *c) => return None,
                    }
                }
                if let Some(data) = frames.borrow_and_update().clone() {
                    break data;
                }
            };
            let event = Event::default().event("frame").data(&*data);
            Some((Ok(event), (frames, closing, false)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_p99_is_the_bound_of_the_bucket_holding_it() {
        let mut t = Tally::default();
        assert_eq!(t.p99_ms(), None);
        for _ in 0..990 {
            t.record("granted", StatusCode::CREATED, Duration::from_millis(2));
        }
        for _ in 0..10 {
            t.record(
                "overloaded",
                StatusCode::SERVICE_UNAVAILABLE,
                Duration::from_millis(400),
            );
        }
        let p99 = t.p99_ms().unwrap();
        assert!((2.0..2.2).contains(&p99), "{p99}");
        t.record("granted", StatusCode::CREATED, Duration::from_millis(400));
        let p99 = t.p99_ms().unwrap();
        assert!((400.0..440.0).contains(&p99), "{p99}");
        assert_eq!(t.errors_5xx, 10);
    }

    #[test]
    fn latencies_beyond_the_last_bucket_land_in_it() {
        let mut t = Tally::default();
        t.record(
            "timeout",
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(3600),
        );
        assert!(t.p99_ms().unwrap() > 50_000.0);
    }

    fn unreachable_live() -> Live {
        // nothing listens there: each frame says Postgres is unavailable
        let db = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(200))
            .connect_lazy("postgres://nobody@127.0.0.1:9/none")
            .unwrap();
        Live::new(db, DbClock::default(), "t".into(), Duration::from_secs(5))
    }

    /// Waits (in paused time, so without spinning) until nothing is watched.
    async fn until_unwatched(live: &Live) {
        for _ in 0..100 {
            if live.0.watching.load(Ordering::Relaxed) == 0 {
                return;
            }
            tokio::time::sleep(TICK / 2).await;
        }
        panic!("the ticker did not stop");
    }

    #[tokio::test(start_paused = true)]
    async fn closing_ends_every_stream_and_stops_the_tickers() {
        use futures::StreamExt;
        let live = unreachable_live();
        let campaign = CampaignId(Uuid::now_v7());
        let mut events = Box::pin(frame_events(
            live.subscribe(campaign),
            live.0.closing.subscribe(),
        ));
        assert!(events.next().await.is_some());
        assert_eq!(live.0.watching.load(Ordering::Relaxed), 1);
        live.close();
        assert!(events.next().await.is_none());
        until_unwatched(&live).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_ticker_stops_when_its_last_watcher_leaves_and_a_new_one_starts_another() {
        let live = unreachable_live();
        let campaign = CampaignId(Uuid::now_v7());
        let (a, b) = (live.subscribe(campaign), live.subscribe(campaign));
        assert_eq!(live.0.watching.load(Ordering::Relaxed), 1);
        drop(a);
        tokio::time::sleep(TICK * 3).await;
        assert_eq!(
            live.0.watching.load(Ordering::Relaxed),
            1,
            "b still watches"
        );
        drop(b);
        until_unwatched(&live).await;
        // no grab is timed once nobody watches
        assert!(live.grab(campaign, &RequestClock::new()).is_none());
        let mut c = live.subscribe(campaign);
        c.changed().await.unwrap();
        assert_eq!(live.0.watching.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_grab_cut_off_after_its_commit_was_sent_is_a_409_not_a_5xx() {
        let w = Arc::new(Watched {
            tally: Mutex::default(),
            frames: watch::Sender::new(None),
        });
        let timing = |clock: RequestClock, timeout| GrabTiming {
            watched: w.clone(),
            clock,
            request_timeout: timeout,
            done: false,
        };
        let committing = RequestClock::new();
        assert!(committing.begin_commit());
        drop(timing(committing, Duration::ZERO));
        drop(timing(RequestClock::new(), Duration::ZERO));
        drop(timing(RequestClock::new(), Duration::from_secs(60)));
        let t = w.tally.lock().unwrap();
        assert_eq!(t.outcomes.get("idempotency_key_in_use"), Some(&1));
        assert_eq!(t.outcomes.get("timeout"), Some(&1));
        assert_eq!(t.errors_5xx, 1);
        assert_eq!(t.abandoned, 1);
    }
}

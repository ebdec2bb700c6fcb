//! Postgres' clock as this instance last measured it. Refusals answered from memory
//! (a campaign not open yet, or over) must give the reason Postgres would give, so
//! they are judged by Postgres' `now()`, not by this machine's clock: each snapshot
//! read from Postgres also reads its clock, and the offset is kept with its error
//! bound (half the round trip). A judgement too close to call goes to Postgres.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeDelta, Utc};

/// How long a measurement is trusted (clocks drift, and NTP steps them).
const TRUSTED_FOR: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
struct Reading {
    /// Postgres' time at `at`, the midpoint of the round trip. Later times are this
    /// plus the monotonic time since, so a step of this machine's wall clock (NTP)
    /// changes nothing.
    db_at: DateTime<Utc>,
    /// How far the true time may be from the estimate.
    error: TimeDelta,
    at: Instant,
}

/// Shared by the campaign cache (which measures) and the grab (which judges).
#[derive(Clone, Default)]
pub struct DbClock(Arc<Mutex<Option<Reading>>>);

impl DbClock {
    /// Records one measurement: Postgres said `db_now` between our `sent` and
    /// `received`. A reading with a smaller error bound is kept while it is fresh.
    pub fn record(&self, sent: Instant, db_now: DateTime<Utc>, received: Instant) {
        let half = received.duration_since(sent) / 2;
        let reading = Reading {
            db_at: db_now,
            // Postgres reports microseconds: add one for its rounding.
            error: TimeDelta::from_std(half).unwrap_or(TimeDelta::MAX) + TimeDelta::microseconds(1),
            at: sent + half,
        };
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let replace = kept
            .is_none_or(|k| k.at.elapsed() > TRUSTED_FOR / 2 || reading.error <= k.error + k.error);
        if replace {
            *kept = Some(reading);
        }
    }

    /// Whether a measurement young enough not to need refreshing exists: past half
    /// its trusted life, the next snapshot is read from Postgres to measure again.
    pub fn is_fresh(&self) -> bool {
        (*self.0.lock().unwrap_or_else(|p| p.into_inner()))
            .is_some_and(|r| r.at.elapsed() < TRUSTED_FOR / 2)
    }

    /// Bounds on Postgres' `now()` at this moment, earliest and latest; `None` when
    /// there is no recent measurement.
    pub fn now(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let reading = (*self.0.lock().unwrap_or_else(|p| p.into_inner()))?;
        if reading.at.elapsed() > TRUSTED_FOR {
            return None;
        }
        let estimate = reading.db_at + TimeDelta::from_std(reading.at.elapsed()).ok()?;
        Some((estimate - reading.error, estimate + reading.error))
    }

    /// Postgres' time as best known (this machine's where never measured): for the
    /// `status` shown in views, not for decisions.
    pub fn estimate(&self) -> DateTime<Utc> {
        match self.now() {
            Some((lo, hi)) => lo + (hi - lo) / 2,
            None => Utc::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_contain_the_skewed_clock_and_are_as_wide_as_the_round_trip() {
        let clock = DbClock::default();
        assert!(clock.now().is_none());
        // Postgres runs 7 s ahead; the round trip took 4 ms.
        let sent = Instant::now();
        let received = sent + Duration::from_millis(4);
        let db_now = Utc::now() + TimeDelta::milliseconds(2) + TimeDelta::seconds(7);
        clock.record(sent, db_now, received);
        let (lo, hi) = clock.now().unwrap();
        let truth = Utc::now() + TimeDelta::seconds(7);
        assert!(lo <= truth && truth <= hi + TimeDelta::milliseconds(1));
        assert!(hi - lo <= TimeDelta::milliseconds(5));
        assert!(clock.estimate() > Utc::now() + TimeDelta::seconds(6));
    }
}

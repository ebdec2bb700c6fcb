//! Rate limits on the grab and redemption routes, per user and per client IP. A
//! request is counted only as fresh work, after its key was found neither committed
//! nor in flight: a replay never spends the caller's allowance. A limited request is
//! refused with 429 and `Retry-After` before any effect, so it is never recorded and
//! the same key may be sent again.

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::request::Parts,
};
use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};

use crate::{
    domain::UserId,
    error::{ApiError, ApiResult},
};

/// The limiters; `None` where a limit is turned off (a rate of 0).
#[derive(Clone, Default)]
pub struct Limits {
    user: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    ip: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
}

fn limiter<K: Clone + std::hash::Hash + Eq>(
    per_second: u32,
) -> Option<Arc<DefaultKeyedRateLimiter<K>>> {
    NonZeroU32::new(per_second)
        .map(|n| Arc::new(DefaultKeyedRateLimiter::keyed(Quota::per_second(n))))
}

impl Limits {
    /// `per_user` and `per_ip` are requests per second (and the burst); 0 turns one off.
    pub fn new(per_user: u32, per_ip: u32) -> Self {
        Limits {
            user: limiter(per_user),
            ip: limiter(per_ip),
        }
    }

    /// Admits or refuses one request of `user` from `ip`.
    pub fn check(&self, user: &UserId, ip: Option<IpAddr>) -> ApiResult<()> {
        // The limiter's own clock: building a clock calibrates it (CPUID and a
        // timing loop), which measured at a fifth of voucherd's CPU per grab.
        if let (Some(limiter), Some(ip)) = (&self.ip, ip)
            && let Err(not_until) = limiter.check_key(&ip)
        {
            return Err(refusal(not_until.wait_time_from(limiter.clock().now())));
        }
        if let Some(limiter) = &self.user
            && let Err(not_until) = limiter.check_key(&user.as_str().to_string())
        {
            return Err(refusal(not_until.wait_time_from(limiter.clock().now())));
        }
        Ok(())
    }

    /// Forgets idle keys every minute, so the limiters' memory follows the active
    /// users rather than every user ever seen.
    pub async fn run_cleanup(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            if let Some(l) = &self.user {
                l.retain_recent();
                l.shrink_to_fit();
            }
            if let Some(l) = &self.ip {
                l.retain_recent();
                l.shrink_to_fit();
            }
        }
    }
}

fn refusal(wait: Duration) -> ApiError {
    metrics::counter!("voucherd_rate_limited_total").increment(1);
    ApiError::RateLimited(wait.as_secs().max(1) + u64::from(wait.subsec_nanos() > 0))
}

/// The peer address of the connection, when the server recorded it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

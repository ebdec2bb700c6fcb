//! Webhook delivery from the outbox: at least once, signed per Standard Webhooks,
//! retried with exponential backoff and jitter, dead-lettered after a bounded number
//! of attempts. Work is leased with `FOR UPDATE SKIP LOCKED`, so several instances
//! share it, a crashed instance's leases come due again, and only the current lease
//! records an outcome.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use sqlx::PgPool;
use uuid::Uuid;

use crate::events::Event;

/// How the dispatcher delivers; built from the settings.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub url: String,
    /// The signing key: a `whsec_`-prefixed secret is base64-decoded, any other is used as bytes.
    pub key: Vec<u8>,
    pub max_attempts: i32,
    pub backoff_base: Duration,
    pub timeout: Duration,
}

const BACKOFF_CAP: Duration = Duration::from_secs(3600);
const BATCH: i64 = 32;

/// The signing key per the Standard Webhooks convention.
pub(crate) fn signing_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// `v1,<base64 HMAC-SHA256 over "{id}.{timestamp}.{body}">`.
pub(crate) fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Delay before attempt `attempts + 1`: base × 2^(attempts-1), capped, with jitter
/// drawn from the upper half so retries from many events do not arrive in step.
pub(crate) fn backoff(base: Duration, attempts: i32) -> Duration {
    let exp = base.saturating_mul(1u32 << (attempts.clamp(1, 20) - 1) as u32);
    let capped = exp.min(BACKOFF_CAP);
    capped.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}

/// An event leased for one delivery attempt.
struct Leased {
    event: Event,
    attempts: i32,
    /// This attempt's lease: the outcome is recorded only while it is still the
    /// event's current one.
    lease: Uuid,
}

/// Leases due events: if this process dies (or stalls) mid-delivery, the event
/// becomes due again when the lease runs out, and another instance delivers it under
/// a lease of its own.
async fn lease_due(pool: &PgPool, lease: Duration) -> Result<Vec<Leased>, crate::error::ApiError> {
    let rows = sqlx::query!(
        r#"UPDATE events SET attempts = attempts + 1, lease = $3,
                           next_attempt_at = now() + make_interval(secs => $2)
         WHERE id IN (SELECT id FROM events
                      WHERE delivery = 'pending' AND next_attempt_at <= now()
                      ORDER BY next_attempt_at LIMIT $1
                      FOR UPDATE SKIP LOCKED)
         RETURNING id, seq, type AS kind, occurred_at, data, attempts, lease AS "lease!""#,
        BATCH,
        lease.as_secs_f64(),
        Uuid::now_v7(),
    )
    .fetch_all(pool)
    .await?;
    let leases: Vec<(i32, Uuid)> = rows.iter().map(|r| (r.attempts, r.lease)).collect();
    let stored = rows
        .into_iter()
        .map(|r| crate::events::event_from!(r))
        .collect();
    let events = crate::events::with_data(&mut *pool.acquire().await?, stored).await?;
    Ok(events
        .into_iter()
        .zip(leases)
        .map(|(event, (attempts, lease))| Leased {
            attempts,
            lease,
            event,
        })
        .collect())
}

async fn deliver(
    client: &reqwest::Client,
    cfg: &WebhookConfig,
    event: &Event,
) -> Result<(), String> {
    let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
    let id = event.id.to_string();
    let ts = chrono::Utc::now().timestamp();
    let resp = client
        .post(&cfg.url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sign(&cfg.key, &id, ts, &body))
        .body(body)
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("receiver answered {}", resp.status()))
    }
}

/// Records an attempt's outcome, only under the lease that made it: once a lease
/// has run out and another dispatcher leased the event, this attempt's word no
/// longer counts (the later attempt records its own).
async fn record(pool: &PgPool, cfg: &WebhookConfig, leased: &Leased, outcome: Result<(), String>) {
    let (id, attempts) = (leased.event.id, leased.attempts);
    // Each statement holds the same guard: this attempt's lease, still pending.
    let (result, label) = match &outcome {
        Ok(()) => (
            sqlx::query!(
                "UPDATE events SET delivery = 'delivered', delivered_at = now(), last_error = NULL
                 WHERE id = $1 AND lease = $2 AND delivery = 'pending'",
                id,
                leased.lease,
            )
            .execute(pool)
            .await,
            "delivered",
        ),
        Err(e) if attempts >= cfg.max_attempts => (
            sqlx::query!(
                "UPDATE events SET delivery = 'dead', last_error = $3
                 WHERE id = $1 AND lease = $2 AND delivery = 'pending'",
                id,
                leased.lease,
                e,
            )
            .execute(pool)
            .await,
            "dead",
        ),
        Err(e) => (
            sqlx::query!(
                "UPDATE events SET next_attempt_at = now() + make_interval(secs => $3),
                                   last_error = $4
                 WHERE id = $1 AND lease = $2 AND delivery = 'pending'",
                id,
                leased.lease,
                backoff(cfg.backoff_base, attempts).as_secs_f64(),
                e,
            )
            .execute(pool)
            .await,
            "retry",
        ),
    };
    match result {
        Ok(done) if done.rows_affected() == 0 => {
            metrics::counter!("voucherd_webhook_deliveries_total", "result" => "stale")
                .increment(1);
            tracing::info!(event = %id, attempts, "webhook outcome of an expired lease not recorded");
        }
        Ok(_) => {
            metrics::counter!("voucherd_webhook_deliveries_total", "result" => label).increment(1);
            if let Err(e) = &outcome
                && label == "dead"
            {
                tracing::warn!(event = %id, attempts, error = %e, "webhook dead-lettered");
            }
        }
        // Not recorded: the lease runs out and the event is delivered again (at
        // least once).
        Err(e) => tracing::warn!(event = %id, error = %e, "could not record a webhook outcome"),
    }
}

/// Delivers events until the process stops.
pub(crate) async fn run_dispatcher(pool: PgPool, cfg: WebhookConfig) {
    // Never follow a redirect: it would turn the POST into a body-less GET at another
    // address (whose 2xx would mark the event delivered) and carry the signature
    // there. A 3xx is a failed attempt like any other non-2xx.
    let client = match reqwest::Client::builder()
        .timeout(cfg.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client; webhooks are off");
            return;
        }
    };
    let lease = cfg.timeout + Duration::from_secs(5);
    loop {
        match lease_due(&pool, lease).await {
            Ok(batch) if !batch.is_empty() => {
                let full = batch.len() as i64 == BATCH;
                futures::future::join_all(batch.into_iter().map(|leased| {
                    let (client, cfg, pool) = (&client, &cfg, &pool);
                    async move {
                        let outcome = deliver(client, cfg, &leased.event).await;
                        record(pool, cfg, &leased, outcome).await;
                    }
                }))
                .await;
                if full {
                    continue;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "leasing webhook work failed; will retry"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example from the Standard Webhooks specification.
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let base = Duration::from_secs(1);
        for attempts in 1..30 {
            let d = backoff(base, attempts);
            let full = base
                .saturating_mul(1 << (attempts.min(20) - 1))
                .min(BACKOFF_CAP);
            assert!(d >= full / 2 && d <= full, "{attempts}: {d:?}");
        }
    }
}

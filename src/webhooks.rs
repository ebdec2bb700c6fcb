//! Webhook delivery from the outbox: at least once, signed per Standard Webhooks,
//! retried with exponential backoff and jitter, dead-lettered after a bounded number
//! of attempts. Work is claimed with `FOR UPDATE SKIP LOCKED` under a lease, so
//! several instances share it and a crashed instance's claims come due again.

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
pub fn signing_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// `v1,<base64 HMAC-SHA256 over "{id}.{timestamp}.{body}">`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
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
pub fn backoff(base: Duration, attempts: i32) -> Duration {
    let exp = base.saturating_mul(1u32 << (attempts.clamp(1, 20) - 1) as u32);
    let capped = exp.min(BACKOFF_CAP);
    capped.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}

#[derive(sqlx::FromRow)]
struct Claimed {
    #[sqlx(flatten)]
    event: Event,
    attempts: i32,
}

/// Claims due events under a lease: if this process dies mid-delivery, the event
/// becomes due again when the lease runs out, and another instance delivers it.
async fn claim(pool: &PgPool, lease: Duration) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE events SET attempts = attempts + 1,
                           next_attempt_at = now() + make_interval(secs => $2)
         WHERE id IN (SELECT id FROM events
                      WHERE delivery = 'pending' AND next_attempt_at <= now()
                      ORDER BY next_attempt_at LIMIT $1
                      FOR UPDATE SKIP LOCKED)
         RETURNING id, seq, type, occurred_at, data, attempts",
    )
    .bind(BATCH)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await
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

async fn record(
    pool: &PgPool,
    cfg: &WebhookConfig,
    id: Uuid,
    attempts: i32,
    outcome: Result<(), String>,
) {
    let result = match &outcome {
        Ok(()) => {
            metrics::counter!("voucherd_webhook_deliveries_total", "result" => "delivered")
                .increment(1);
            sqlx::query("UPDATE events SET delivery = 'delivered', delivered_at = now(), last_error = NULL WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await
        }
        Err(e) if attempts >= cfg.max_attempts => {
            metrics::counter!("voucherd_webhook_deliveries_total", "result" => "dead").increment(1);
            tracing::warn!(event = %id, attempts, error = %e, "webhook dead-lettered");
            sqlx::query("UPDATE events SET delivery = 'dead', last_error = $2 WHERE id = $1")
                .bind(id)
                .bind(e)
                .execute(pool)
                .await
        }
        Err(e) => {
            metrics::counter!("voucherd_webhook_deliveries_total", "result" => "retry")
                .increment(1);
            let delay = backoff(cfg.backoff_base, attempts);
            sqlx::query(
                "UPDATE events SET next_attempt_at = now() + make_interval(secs => $2), last_error = $3
                 WHERE id = $1",
            )
            .bind(id)
            .bind(delay.as_secs_f64())
            .bind(e)
            .execute(pool)
            .await
        }
    };
    // Not recorded: the lease runs out and the event is delivered again (at least once).
    if let Err(e) = result {
        tracing::warn!(event = %id, error = %e, "could not record a webhook outcome");
    }
}

/// Delivers events until the process stops.
pub async fn run_dispatcher(pool: PgPool, cfg: WebhookConfig) {
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
        match claim(&pool, lease).await {
            Ok(batch) if !batch.is_empty() => {
                let full = batch.len() as i64 == BATCH;
                futures::future::join_all(batch.into_iter().map(|c| {
                    let (client, cfg, pool) = (&client, &cfg, &pool);
                    async move {
                        let outcome = deliver(client, cfg, &c.event).await;
                        record(pool, cfg, c.event.id, c.attempts, outcome).await;
                    }
                }))
                .await;
                if full {
                    continue;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "claiming webhook work failed; will retry"),
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

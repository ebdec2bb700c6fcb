//! A thin client for the voucherd routes the load generator drives.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// Where voucherd is and how to authenticate to it.
#[derive(clap::Args, Clone, Debug)]
pub struct Target {
    /// voucherd's base URL; several, comma-separated, spread grabs over instances.
    #[arg(long, env = "VOUCHERD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    #[arg(long, env = "ADMIN_TOKEN", default_value = "dev-only-admin-token")]
    pub admin_token: String,
    /// Users sign their own HS256 tokens with this secret.
    #[arg(
        long,
        env = "JWT_SECRET",
        default_value = "dev-only-jwt-secret-change-me-0123456789"
    )]
    pub jwt_secret: String,
}

#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    /// The first instance: admin calls and reads go here.
    pub base: String,
    /// Every instance; grabs are spread over them.
    bases: Vec<String>,
    admin: String,
    key: EncodingKey,
}

/// What one HTTP attempt came back with.
#[derive(Debug)]
pub enum Reply {
    Answer {
        status: u16,
        code: String,
        body: Vec<u8>,
        /// `Retry-After`, if the answer carried one (every 429 and 503 must); a value
        /// that is not whole seconds reads as zero.
        retry_after: Option<Duration>,
    },
    /// The client gave up (timeout) or the connection failed: the outcome is unknown.
    NoAnswer,
}

impl Api {
    pub fn new(t: &Target, connections: usize) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(connections)
            .tcp_nodelay(true)
            .build()?;
        let bases: Vec<String> = t
            .url
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        anyhow::ensure!(!bases.is_empty(), "--url is empty");
        Ok(Api {
            http,
            base: bases[0].clone(),
            bases,
            admin: t.admin_token.clone(),
            key: EncodingKey::from_secret(t.jwt_secret.as_bytes()),
        })
    }

    pub fn token(&self, user: &str) -> String {
        #[derive(serde::Serialize)]
        struct Claims<'a> {
            sub: &'a str,
            exp: u64,
        }
        let exp = jsonwebtoken::get_current_timestamp() + 4 * 3600;
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims { sub: user, exp },
            &self.key,
        )
        .expect("HS256 signing cannot fail")
    }

    pub async fn create_campaign(&self, stock: i64, per_user_limit: i64) -> anyhow::Result<String> {
        self.create_campaign_at(stock, per_user_limit, None).await
    }

    /// Creates a campaign that opens at `starts_at` (RFC 3339; now when `None`).
    pub async fn create_campaign_at(
        &self,
        stock: i64,
        per_user_limit: i64,
        starts_at: Option<&str>,
    ) -> anyhow::Result<String> {
        let mut body = json!({
            "name": "loadgen", "total_stock": stock, "per_user_limit": per_user_limit,
            "ends_at": "2099-01-01T00:00:00Z",
            "voucher": {"discount": {"type": "fixed", "amount": 1000, "currency": "VND"},
                        "valid_for_seconds": 86400}
        });
        if let Some(at) = starts_at {
            body["starts_at"] = json!(at);
        }
        let resp = self
            .http
            .post(format!("{}/v1/admin/campaigns", self.base))
            .bearer_auth(&self.admin)
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(
            resp.status() == 201,
            "creating a campaign: {}",
            resp.text().await?
        );
        let v: Value = resp.json().await?;
        Ok(v["id"].as_str().unwrap_or_default().to_string())
    }

    pub async fn admin_get(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "GET {path}: {}", resp.status());
        Ok(resp.json().await?)
    }

    /// A public read (no credentials), e.g. `GET /v1/campaigns/{id}`.
    pub async fn public_get(&self, path: &str, timeout: Duration) -> anyhow::Result<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .timeout(timeout)
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "GET {path}: {}", resp.status());
        Ok(resp.json().await?)
    }

    /// One grab attempt; `timeout` is the client's patience.
    pub async fn grab(&self, campaign: &str, token: &str, key: &str, timeout: Duration) -> Reply {
        self.grab_on(0, campaign, token, key, timeout).await
    }

    /// One grab attempt on instance `n` (modulo the number of instances).
    pub async fn grab_on(
        &self,
        n: usize,
        campaign: &str,
        token: &str,
        key: &str,
        timeout: Duration,
    ) -> Reply {
        let path = format!("/v1/campaigns/{campaign}/claims");
        answer(self.post_on(n, &path, token, key, timeout)).await
    }

    /// A user's POST with an idempotency key, to instance `n`.
    fn post_on(
        &self,
        n: usize,
        path: &str,
        token: &str,
        key: &str,
        timeout: Duration,
    ) -> reqwest::RequestBuilder {
        let base = &self.bases[n % self.bases.len()];
        self.http
            .post(format!("{base}{path}"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .timeout(timeout)
    }

    /// One redemption attempt of voucher `code` on instance `n`, for an order that
    /// the voucher's terms accept.
    pub async fn redeem_on(
        &self,
        n: usize,
        code: &str,
        token: &str,
        key: &str,
        timeout: Duration,
    ) -> Reply {
        let path = format!("/v1/vouchers/{code}/redemptions");
        let req = self.post_on(n, &path, token, key, timeout).json(
            &json!({"order_id": format!("order-{key}"), "order_amount": 250_000, "currency": "VND"}),
        );
        answer(req).await
    }
}

async fn answer(req: reqwest::RequestBuilder) -> Reply {
    let Ok(resp) = req.send().await else {
        return Reply::NoAnswer;
    };
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").map(|v| {
        v.to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(Duration::ZERO, Duration::from_secs)
    });
    let Ok(body) = resp.bytes().await else {
        return Reply::NoAnswer;
    };
    let code = if status >= 400 {
        serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_string))
            .unwrap_or_default()
    } else {
        String::new()
    };
    Reply::Answer {
        status,
        code,
        body: body.to_vec(),
        retry_after,
    }
}

//! Settings read from the environment once at startup and validated, so a bad value
//! stops the process with a message that names the variable instead of failing later.

use std::{net::SocketAddr, time::Duration};

use secrecy::{ExposeSecret, SecretString};

/// Every setting voucherd understands. Secrets are wrapped so they never reach a log.
#[derive(Clone, Debug)]
pub struct Settings {
    pub database_url: SecretString,
    /// A read replica (`READ_DATABASE_URL`) for reads that need not touch the
    /// primary: wallets and the public campaign list (see `replica`).
    pub read_database_url: Option<SecretString>,
    /// How long after a user's own effect that user's reads stay on the primary, and
    /// the most the replica may lag before no read goes to it.
    pub replica_read_after_write: Duration,
    /// `None` runs on the in-process cache alone.
    pub redis_url: Option<SecretString>,
    pub jwt_secret: SecretString,
    /// How long past `exp` a user token is still accepted (0 to 60 s).
    pub jwt_leeway: Duration,
    /// Named admins (`ADMIN_TOKENS=name:token,…`, and `ADMIN_TOKEN` as the admin named
    /// `admin`): at least one. The name is the actor recorded in each admin change's
    /// event; every admin shares the idempotency scope `admin`.
    pub admin_tokens: Vec<(String, SecretString)>,
    /// Order services (`SERVICE_TOKENS=name:token,…`): each may quote, redeem and
    /// roll back on behalf of the user it names in `On-Behalf-Of`, and nothing else.
    pub service_tokens: Vec<(String, SecretString)>,
    pub listen_addr: SocketAddr,
    /// Names this instance in the figures it reports of itself (the live launch
    /// view): the host's name and the listening port unless `INSTANCE_NAME` says.
    pub instance_name: String,
    /// Idempotency records are kept at least this long, then purged.
    pub idempotency_ttl: Duration,
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<SecretString>,
    /// Deliveries of one event before it is dead-lettered.
    pub webhook_max_attempts: i32,
    /// First retry delay; doubles per attempt (with jitter), capped at an hour.
    pub webhook_backoff_base: Duration,
    pub webhook_timeout: Duration,
    /// Browser origins allowed by CORS; empty disables cross-origin access.
    pub cors_allowed_origins: Vec<String>,
    pub log_json: bool,
    pub db_max_connections: u32,
    /// Upper bound on a whole request; kept above the sum of the database bounds so
    /// a timed-out request can only be one whose transaction never committed.
    pub request_timeout: Duration,
    /// Every Redis call gives up after this long and the request carries on without it.
    pub redis_timeout: Duration,
    pub migrate_on_start: bool,
    /// How grants are written: many per transaction (`batched`) or one (`single`).
    pub grab_mode: GrabMode,
    /// Most grants committed in one batch transaction.
    pub grab_batch_max: usize,
    /// Batches of one campaign in flight at once; two let one batch form while
    /// another commits.
    pub grab_writers: usize,
    /// Batches being written at once, counting only those sent less than 100 ms ago.
    pub grab_active_batches: usize,
    /// Batch writers, and so pooled connections, for all campaigns together; below
    /// the pool size, so admin, redemption, wallet and readiness traffic always has
    /// connections left.
    pub grab_writer_connections: usize,
    /// How long after its request arrived a grab may still be sent to Postgres; a
    /// grab past it is dropped unwritten and answered 503 `overloaded`.
    pub grab_deadline: Duration,
    /// Most grabs waiting on one campaign; past it a grab is refused at once.
    pub grab_queue_max: usize,
    /// How long the oldest waiting grab of a campaign may have waited before new
    /// ones are refused at once.
    pub grab_queue_max_wait: Duration,
    /// How long a grant batch may have been committing before new grabs on every
    /// campaign are refused at once (a standby gone under synchronous replication
    /// stalls every commit until it is replaced).
    pub grab_commit_stall: Duration,
    /// Grabs and redemptions per second per user (also the burst); 0 turns it off.
    pub rate_limit_user: u32,
    /// The same per client IP (the connection's peer); 0 turns it off.
    pub rate_limit_ip: u32,
    pub max_connections: usize,
    /// CSV exports streaming at once, each on a connection of its own; past it an
    /// export is refused with 503 `exports_busy`.
    pub exports_max: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    /// Live campaigns given series of their own on `/metrics` (stock remaining and
    /// total), the most recently opened first; 0 gives none. Bounds the label
    /// cardinality however many campaigns an admin opens.
    pub metrics_campaigns_max: usize,
    /// How often the figures that need Postgres (outbox backlog, dead letters, stock
    /// of live campaigns) are read for `/metrics`: one periodic read, never one per
    /// request or per scrape.
    pub metrics_db_interval: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrabMode {
    Single,
    Batched,
}

/// A setting that is missing or invalid; the message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {problem}")]
pub struct SettingError {
    pub name: &'static str,
    pub problem: String,
}

fn err(name: &'static str, problem: impl Into<String>) -> SettingError {
    SettingError {
        name,
        problem: problem.into(),
    }
}

/// Reads settings through a lookup function so tests can supply their own map.
pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingError> {
    let opt = |name: &str| get(name).filter(|v| !v.trim().is_empty());

    let database_url = opt("DATABASE_URL").ok_or_else(|| err("DATABASE_URL", "is required"))?;
    if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
        return Err(err(
            "DATABASE_URL",
            "must be a postgres:// or postgresql:// URL",
        ));
    }
    let read_database_url = opt("READ_DATABASE_URL");
    if let Some(url) = &read_database_url
        && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        return Err(err(
            "READ_DATABASE_URL",
            "must be a postgres:// or postgresql:// URL",
        ));
    }
    let replica_read_after_write =
        duration(&opt, "REPLICA_READ_AFTER_WRITE", Duration::from_secs(2))?;
    // The replica's lag is bounded by the oldest of a second's samples: a window
    // shorter than that would never let a read reach it.
    if !(Duration::from_millis(1500)..=Duration::from_secs(60)).contains(&replica_read_after_write)
    {
        return Err(err(
            "REPLICA_READ_AFTER_WRITE",
            "must be from 1500ms to 60s",
        ));
    }
    let redis_url = opt("REDIS_URL");
    if let Some(url) = &redis_url
        && redis::Client::open(url.as_str()).is_err()
    {
        return Err(err("REDIS_URL", "is not a valid redis:// URL"));
    }
    let jwt_secret = opt("JWT_SECRET").ok_or_else(|| err("JWT_SECRET", "is required"))?;
    if jwt_secret.len() < 32 {
        return Err(err(
            "JWT_SECRET",
            format!("must be at least 32 bytes (got {})", jwt_secret.len()),
        ));
    }
    let jwt_leeway = duration(&opt, "JWT_LEEWAY", Duration::from_secs(5))?;
    if jwt_leeway > Duration::from_secs(60) || jwt_leeway.subsec_nanos() != 0 {
        return Err(err("JWT_LEEWAY", "must be whole seconds from 0s to 60s"));
    }
    let admin_tokens = admin_tokens(opt("ADMIN_TOKEN"), opt("ADMIN_TOKENS").as_deref())?;
    let service_tokens = named_tokens(
        "SERVICE_TOKENS",
        opt("SERVICE_TOKENS").as_deref(),
        &admin_tokens,
    )?;
    let listen_addr = match opt("LISTEN_ADDR") {
        None => SocketAddr::from(([0, 0, 0, 0], 8080)),
        Some(v) => v.parse().map_err(|_| {
            err(
                "LISTEN_ADDR",
                format!("`{v}` is not an address like 0.0.0.0:8080"),
            )
        })?,
    };
    let instance_name = match opt("INSTANCE_NAME") {
        None => format!("{}:{}", host_name(), listen_addr.port()),
        Some(v) if (1..=64).contains(&v.len()) && v.chars().all(|c| c.is_ascii_graphic()) => v,
        Some(_) => {
            return Err(err(
                "INSTANCE_NAME",
                "must be 1 to 64 printable ASCII characters without spaces",
            ));
        }
    };
    let idempotency_ttl = duration(&opt, "IDEMPOTENCY_TTL", Duration::from_secs(24 * 3600))?;
    if idempotency_ttl < Duration::from_secs(60) {
        return Err(err("IDEMPOTENCY_TTL", "must be at least 60s"));
    }
    let webhook_url = opt("WEBHOOK_URL");
    if let Some(url) = &webhook_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(err("WEBHOOK_URL", "must be an http:// or https:// URL"));
    }
    let webhook_secret = opt("WEBHOOK_SECRET");
    if webhook_url.is_some() && webhook_secret.as_ref().is_none_or(|s| s.len() < 24) {
        return Err(err(
            "WEBHOOK_SECRET",
            "must be set (at least 24 bytes) when WEBHOOK_URL is set",
        ));
    }
    let webhook_max_attempts = match opt("WEBHOOK_MAX_ATTEMPTS") {
        None => 12,
        Some(v) => v
            .parse::<i32>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| err("WEBHOOK_MAX_ATTEMPTS", "must be a number from 1 to 100"))?,
    };
    let webhook_backoff_base = duration(&opt, "WEBHOOK_BACKOFF_BASE", Duration::from_secs(2))?;
    if webhook_backoff_base.is_zero() || webhook_backoff_base > Duration::from_secs(3600) {
        return Err(err("WEBHOOK_BACKOFF_BASE", "must be between 1ms and 1h"));
    }
    let webhook_timeout = duration(&opt, "WEBHOOK_TIMEOUT", Duration::from_secs(5))?;
    if webhook_timeout.is_zero() || webhook_timeout > Duration::from_secs(60) {
        return Err(err("WEBHOOK_TIMEOUT", "must be between 1ms and 60s"));
    }
    let cors_allowed_origins = opt("CORS_ALLOWED_ORIGINS")
        .map(|v| {
            v.split(',')
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for origin in &cors_allowed_origins {
        if origin.parse::<axum::http::HeaderValue>().is_err()
            || !(origin.starts_with("http://") || origin.starts_with("https://"))
        {
            return Err(err(
                "CORS_ALLOWED_ORIGINS",
                format!("`{origin}` is not an origin like https://shop.example"),
            ));
        }
    }
    let log_json = match opt("LOG_FORMAT").as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => {
            return Err(err(
                "LOG_FORMAT",
                format!("`{other}` is not one of text, json"),
            ));
        }
    };
    let db_max_connections = match opt("DATABASE_MAX_CONNECTIONS") {
        None => 32,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                err(
                    "DATABASE_MAX_CONNECTIONS",
                    "must be a number from 1 to 1000",
                )
            })?,
    };
    let request_timeout = duration(&opt, "REQUEST_TIMEOUT", Duration::from_secs(15))?;
    if request_timeout < Duration::from_secs(12) {
        return Err(err(
            "REQUEST_TIMEOUT",
            "must be at least 12s (above the database's own time bounds)",
        ));
    }
    let redis_timeout = duration(&opt, "REDIS_TIMEOUT", Duration::from_millis(100))?;
    if redis_timeout.is_zero() || redis_timeout > Duration::from_secs(5) {
        return Err(err("REDIS_TIMEOUT", "must be between 1ms and 5s"));
    }
    let migrate_on_start = match opt("MIGRATE_ON_START").as_deref() {
        None | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(other) => {
            return Err(err(
                "MIGRATE_ON_START",
                format!("`{other}` is not true or false"),
            ));
        }
    };

    let grab_mode = match opt("GRAB_MODE").as_deref() {
        None | Some("batched") => GrabMode::Batched,
        Some("single") => GrabMode::Single,
        Some(other) => {
            return Err(err(
                "GRAB_MODE",
                format!("`{other}` is not one of batched, single"),
            ));
        }
    };
    let grab_batch_max = number(&opt, "GRAB_BATCH_MAX", 512, 1..=10_000)?;
    let grab_writers = number(&opt, "GRAB_WRITERS", 2, 1..=16)?;
    let grab_active_batches = number(&opt, "GRAB_ACTIVE_BATCHES", 2, 1..=1000)?;
    let pool = db_max_connections as usize;
    let grab_writer_connections =
        number(&opt, "GRAB_WRITER_CONNECTIONS", (pool / 4).max(1), 1..=1000)?;
    if grab_mode == GrabMode::Batched && grab_writer_connections >= pool {
        return Err(err(
            "GRAB_WRITER_CONNECTIONS",
            format!(
                "must be below DATABASE_MAX_CONNECTIONS ({pool}), so grant writers never take the whole pool"
            ),
        ));
    }
    let grab_deadline = duration(&opt, "GRAB_DEADLINE", Duration::from_secs(5))?;
    // A grab sent at its deadline must still be answered by Postgres (its statement
    // bound, plus a second of slack) before the request's own timeout.
    let grab_deadline_max =
        request_timeout.saturating_sub(crate::STATEMENT_BOUND + Duration::from_secs(1));
    if grab_deadline < Duration::from_millis(100) || grab_deadline > grab_deadline_max {
        return Err(err(
            "GRAB_DEADLINE",
            format!(
                "must be from 100ms to {} (REQUEST_TIMEOUT less the 5s statement bound and 1s)",
                humantime::format_duration(grab_deadline_max)
            ),
        ));
    }
    let grab_queue_max = number(&opt, "GRAB_QUEUE_MAX", 4 * grab_batch_max, 1..=1_000_000)?;
    let grab_queue_max_wait = duration(&opt, "GRAB_QUEUE_MAX_WAIT", Duration::from_secs(1))?;
    if grab_queue_max_wait.is_zero() || grab_queue_max_wait > grab_deadline {
        return Err(err(
            "GRAB_QUEUE_MAX_WAIT",
            "must be above 0 and at most GRAB_DEADLINE",
        ));
    }
    // The default never exceeds a short GRAB_DEADLINE set before this setting existed.
    let grab_commit_stall = duration(
        &opt,
        "GRAB_COMMIT_STALL",
        Duration::from_secs(2).min(grab_deadline),
    )?;
    if grab_commit_stall < Duration::from_millis(100) || grab_commit_stall > grab_deadline {
        return Err(err(
            "GRAB_COMMIT_STALL",
            "must be from 100ms to GRAB_DEADLINE",
        ));
    }
    let rate_limit_user = number(&opt, "RATE_LIMIT_USER", 10, 0..=1_000_000)? as u32;
    let rate_limit_ip = number(&opt, "RATE_LIMIT_IP", 0, 0..=1_000_000)? as u32;
    let max_connections = number(&opt, "MAX_CONNECTIONS", 10_000, 1..=1_000_000)?;
    let exports_max = number(&opt, "EXPORTS_MAX", 2, 1..=64)?;
    let header_read_timeout = duration(&opt, "HEADER_READ_TIMEOUT", Duration::from_secs(10))?;
    if header_read_timeout.is_zero() || header_read_timeout > Duration::from_secs(300) {
        return Err(err("HEADER_READ_TIMEOUT", "must be between 1ms and 300s"));
    }
    let body_read_timeout = duration(
        &opt,
        "BODY_READ_TIMEOUT",
        crate::json::BodyDeadline::DEFAULT,
    )?;
    if body_read_timeout.is_zero() || body_read_timeout >= request_timeout {
        return Err(err(
            "BODY_READ_TIMEOUT",
            "must be above 0 and below REQUEST_TIMEOUT",
        ));
    }
    let metrics_campaigns_max = number(&opt, "METRICS_CAMPAIGNS_MAX", 50, 0..=1000)?;
    let metrics_db_interval = duration(&opt, "METRICS_DB_INTERVAL", Duration::from_secs(5))?;
    if metrics_db_interval < Duration::from_secs(1)
        || metrics_db_interval > Duration::from_secs(300)
    {
        return Err(err("METRICS_DB_INTERVAL", "must be from 1s to 300s"));
    }

    Ok(Settings {
        database_url: database_url.into(),
        read_database_url: read_database_url.map(Into::into),
        replica_read_after_write,
        redis_url: redis_url.map(Into::into),
        jwt_secret: jwt_secret.into(),
        jwt_leeway,
        admin_tokens,
        service_tokens,
        listen_addr,
        instance_name,
        idempotency_ttl,
        webhook_url,
        webhook_secret: webhook_secret.map(Into::into),
        webhook_max_attempts,
        webhook_backoff_base,
        webhook_timeout,
        cors_allowed_origins,
        log_json,
        db_max_connections,
        request_timeout,
        redis_timeout,
        migrate_on_start,
        grab_mode,
        grab_batch_max,
        grab_writers,
        grab_active_batches,
        grab_writer_connections,
        grab_deadline,
        grab_queue_max,
        grab_queue_max_wait,
        grab_commit_stall,
        rate_limit_user,
        rate_limit_ip,
        max_connections,
        exports_max,
        header_read_timeout,
        body_read_timeout,
        metrics_campaigns_max,
        metrics_db_interval,
    })
}

/// Reads settings from the process environment.
pub fn from_env() -> Result<Settings, SettingError> {
    from_lookup(|name| std::env::var(name).ok())
}

/// Reads only what `voucherd token` needs, so minting a token does not require a database URL.
pub fn jwt_secret_from_env() -> Result<SecretString, SettingError> {
    let secret = std::env::var("JWT_SECRET")
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| err("JWT_SECRET", "is required"))?;
    if secret.len() < 32 {
        return Err(err("JWT_SECRET", "must be at least 32 bytes"));
    }
    Ok(secret.into())
}

fn number(
    opt: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize, SettingError> {
    match opt(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                err(
                    name,
                    format!("must be a number from {} to {}", range.start(), range.end()),
                )
            }),
    }
}

/// The admins: `ADMIN_TOKENS` (`name:token` pairs) and `ADMIN_TOKEN`, which alone
/// keeps working as the admin named `admin`. One of the two is required; a name or a
/// token given twice, across both, stops start-up naming the setting.
fn admin_tokens(
    single: Option<String>,
    named: Option<&str>,
) -> Result<Vec<(String, SecretString)>, SettingError> {
    if single.is_none() && named.is_none() {
        return Err(err("ADMIN_TOKEN", "or ADMIN_TOKENS is required"));
    }
    let mut admins = Vec::new();
    if let Some(token) = single {
        check_token("ADMIN_TOKEN", None, &token)?;
        admins.push(("admin".to_string(), SecretString::from(token)));
    }
    for (name, token) in named_tokens("ADMIN_TOKENS", named, &admins)? {
        if admins.iter().any(|(n, _)| *n == name) {
            return Err(err(
                "ADMIN_TOKENS",
                format!("{name}: the name of the admin ADMIN_TOKEN already is"),
            ));
        }
        admins.push((name, token));
    }
    if admins.is_empty() {
        // `ADMIN_TOKENS=","` names nobody: a service nobody can run is refused
        return Err(err(
            "ADMIN_TOKENS",
            "names no admin (give name:token pairs)",
        ));
    }
    Ok(admins)
}

/// A token is at least 16 characters, with no spaces or control characters.
fn check_token(setting: &'static str, name: Option<&str>, token: &str) -> Result<(), SettingError> {
    if token.chars().count() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        let whose = name
            .map(|n| format!("{n}: the token"))
            .unwrap_or_else(|| "the token".into());
        return Err(err(
            setting,
            format!("{whose} must be at least 16 characters, no spaces"),
        ));
    }
    Ok(())
}

/// `name:token` pairs separated by commas (`ADMIN_TOKENS`, `SERVICE_TOKENS`). A name
/// is 1 to 64 of `a-z`, `0-9`, `-` and `_` (it names the caller in events and logs); a
/// token is at least 16 characters. No name or token may repeat, within the setting
/// and no token may be one of `taken` (the credentials read before it): one token
/// naming two callers would make either's actions the other's.
fn named_tokens(
    setting: &'static str,
    raw: Option<&str>,
    taken: &[(String, SecretString)],
) -> Result<Vec<(String, SecretString)>, SettingError> {
    let mut named: Vec<(String, SecretString)> = Vec::new();
    for entry in raw
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let Some((name, token)) = entry.split_once(':') else {
            return Err(err(setting, "each entry must be name:token"));
        };
        let valid_name = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid_name {
            return Err(err(
                setting,
                format!("`{name}`: a name is 1 to 64 of a-z, 0-9, - and _"),
            ));
        }
        check_token(setting, Some(name), token)?;
        if taken.iter().any(|(_, t)| t.expose_secret() == token) {
            return Err(err(
                setting,
                format!("{name}: the token is already another credential's"),
            ));
        }
        if named
            .iter()
            .any(|(n, t)| n == name || t.expose_secret() == token)
        {
            return Err(err(setting, format!("{name}: a name or token given twice")));
        }
        named.push((name.to_string(), token.to_string().into()));
    }
    Ok(named)
}

fn duration(
    opt: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: Duration,
) -> Result<Duration, SettingError> {
    match opt(name) {
        None => Ok(default),
        Some(v) => humantime::parse_duration(v.trim()).map_err(|_| {
            err(
                name,
                format!("`{v}` is not a duration like 30s, 15m or 24h"),
            )
        }),
    }
}

impl Settings {
    pub fn database_url(&self) -> &str {
        self.database_url.expose_secret()
    }

    /// The delivery settings, when `WEBHOOK_URL` is set.
    pub fn webhook(&self) -> Option<crate::webhooks::WebhookConfig> {
        let url = self.webhook_url.clone()?;
        let secret = self.webhook_secret.as_ref()?.expose_secret();
        Some(crate::webhooks::WebhookConfig {
            url,
            key: crate::webhooks::signing_key(secret),
            max_attempts: self.webhook_max_attempts,
            backoff_base: self.webhook_backoff_base,
            timeout: self.webhook_timeout,
        })
    }
}

/// The machine's name as the kernel reports it (a container's is its id), or
/// `voucherd` where it cannot be read.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "voucherd".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn base() -> HashMap<&'static str, String> {
        HashMap::from([
            ("DATABASE_URL", "postgres://localhost/voucherd".to_string()),
            ("JWT_SECRET", "x".repeat(32)),
            ("ADMIN_TOKEN", "a".repeat(16)),
        ])
    }

    fn load(map: &HashMap<&'static str, String>) -> Result<Settings, SettingError> {
        from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn admin_tokens_that_name_nobody_are_refused() {
        for value in [",", " , ", ",,,"] {
            let mut map = base();
            map.remove("ADMIN_TOKEN");
            map.insert("ADMIN_TOKENS", value.to_string());
            let e = load(&map).expect_err(value);
            assert!(e.to_string().contains("ADMIN_TOKENS"), "{e}");
        }
    }

    #[test]
    fn defaults_apply() {
        let s = load(&base()).unwrap();
        assert_eq!(s.listen_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(s.idempotency_ttl, Duration::from_secs(86400));
        assert!(s.redis_url.is_none());
        assert_eq!(s.metrics_campaigns_max, 50);
        assert_eq!(s.metrics_db_interval, Duration::from_secs(5));
    }

    #[test]
    fn each_bad_setting_is_named() {
        for (name, value) in [
            ("DATABASE_URL", ""),
            ("DATABASE_URL", "mysql://x"),
            ("JWT_SECRET", "short"),
            ("ADMIN_TOKEN", "short"),
            ("LISTEN_ADDR", "nonsense"),
            ("IDEMPOTENCY_TTL", "soon"),
            ("IDEMPOTENCY_TTL", "5s"),
            ("REDIS_URL", "not a url"),
            ("WEBHOOK_URL", "ftp://x"),
            ("LOG_FORMAT", "xml"),
            ("CORS_ALLOWED_ORIGINS", "shop.example"),
            ("DATABASE_MAX_CONNECTIONS", "0"),
            ("WEBHOOK_MAX_ATTEMPTS", "0"),
            ("WEBHOOK_BACKOFF_BASE", "0s"),
            ("GRAB_MODE", "fast"),
            ("GRAB_BATCH_MAX", "0"),
            ("GRAB_WRITERS", "99"),
            ("GRAB_ACTIVE_BATCHES", "0"),
            ("RATE_LIMIT_USER", "-1"),
            ("RATE_LIMIT_IP", "lots"),
            ("MAX_CONNECTIONS", "0"),
            ("HEADER_READ_TIMEOUT", "0s"),
            ("BODY_READ_TIMEOUT", "15s"),
            ("JWT_LEEWAY", "61s"),
            ("JWT_LEEWAY", "1500ms"),
            ("GRAB_WRITER_CONNECTIONS", "32"),
            ("GRAB_WRITER_CONNECTIONS", "0"),
            ("GRAB_DEADLINE", "10s"),
            ("GRAB_DEADLINE", "1ms"),
            ("GRAB_QUEUE_MAX", "0"),
            ("GRAB_QUEUE_MAX_WAIT", "6s"),
            ("GRAB_COMMIT_STALL", "50ms"),
            ("GRAB_COMMIT_STALL", "1h"),
            ("METRICS_CAMPAIGNS_MAX", "1001"),
            ("METRICS_CAMPAIGNS_MAX", "-1"),
            ("METRICS_CAMPAIGNS_MAX", "99999999999999999999999"),
            ("METRICS_DB_INTERVAL", "500ms"),
            ("METRICS_DB_INTERVAL", "1h"),
            ("METRICS_DB_INTERVAL", "often"),
            ("EXPORTS_MAX", "0"),
            ("ADMIN_TOKENS", "Alice:alice-token-0123456789"),
            ("ADMIN_TOKENS", "alice:short"),
            ("ADMIN_TOKENS", "alice"),
            ("ADMIN_TOKENS", "admin:another-token-0123456789"),
            ("ADMIN_TOKENS", "alice:aaaaaaaaaaaaaaaa"),
            (
                "ADMIN_TOKENS",
                "a:token-number-one-0123,a:token-number-two-0123",
            ),
            (
                "ADMIN_TOKENS",
                "a:token-number-one-0123,b:token-number-one-0123",
            ),
            ("SERVICE_TOKENS", "orders:aaaaaaaaaaaaaaaa"),
        ] {
            let mut map = base();
            map.insert(name, value.to_string());
            let e = load(&map).expect_err(name);
            assert_eq!(e.name, name, "{value}");
        }
    }

    #[test]
    fn grant_writers_get_a_quarter_of_the_pool_and_never_all_of_it() {
        let mut map = base();
        map.insert("DATABASE_MAX_CONNECTIONS", "4".into());
        let s = load(&map).unwrap();
        assert_eq!(s.grab_writer_connections, 1);
        assert_eq!(s.grab_queue_max, 4 * s.grab_batch_max);
        map.insert("DATABASE_MAX_CONNECTIONS", "1".into());
        assert_eq!(load(&map).unwrap_err().name, "GRAB_WRITER_CONNECTIONS");
        map.insert("GRAB_MODE", "single".into());
        assert!(load(&map).is_ok());
        // A longer request timeout leaves room for a longer deadline.
        let mut map = base();
        map.insert("REQUEST_TIMEOUT", "30s".into());
        map.insert("GRAB_DEADLINE", "20s".into());
        assert_eq!(load(&map).unwrap().grab_deadline, Duration::from_secs(20));
        // A deadline shorter than the stall bound's default still starts: the
        // default follows it.
        let mut map = base();
        map.insert("GRAB_DEADLINE", "1s".into());
        assert_eq!(
            load(&map).unwrap().grab_commit_stall,
            Duration::from_secs(1)
        );
        assert_eq!(
            load(&base()).unwrap().grab_commit_stall,
            Duration::from_secs(2)
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let mut map = base();
        map.insert("ADMIN_TOKENS", "alice:alice-secret-token-0123".into());
        let s = load(&map).unwrap();
        let printed = format!("{s:?}");
        assert!(!printed.contains(&"x".repeat(32)));
        assert!(!printed.contains(&"a".repeat(16)));
        assert!(!printed.contains("alice-secret-token-0123"));
    }

    fn admin_names(s: &Settings) -> Vec<&str> {
        s.admin_tokens.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn admins_are_named_and_admin_token_alone_is_the_admin_named_admin() {
        assert_eq!(admin_names(&load(&base()).unwrap()), ["admin"]);
        let mut map = base();
        map.remove("ADMIN_TOKEN");
        assert_eq!(load(&map).unwrap_err().name, "ADMIN_TOKEN");
        map.insert(
            "ADMIN_TOKENS",
            " alice:alice-token-0123456789, bob_2:bob-token-0123456789 ".into(),
        );
        assert_eq!(admin_names(&load(&map).unwrap()), ["alice", "bob_2"]);
        map.insert("ADMIN_TOKEN", "a".repeat(16));
        assert_eq!(
            admin_names(&load(&map).unwrap()),
            ["admin", "alice", "bob_2"]
        );
        // An admin's token is no order service's.
        map.insert("SERVICE_TOKENS", "orders:bob-token-0123456789".into());
        assert_eq!(load(&map).unwrap_err().name, "SERVICE_TOKENS");
        // Names of services and admins are apart: a service may be named `admin`.
        map.insert("SERVICE_TOKENS", "admin:orders-token-0123456789".into());
        assert!(load(&map).is_ok());
    }
}

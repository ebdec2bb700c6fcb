//! Authentication: user JWTs (HS256 only), the admin bearer token and the order
//! services' tokens, as extractors so a handler cannot forget to check who is calling.

use std::sync::Arc;

use axum::{extract::FromRequestParts, http::request::Parts};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::{AppState, domain::UserId, error::ApiError};

/// Keys derived once from the settings.
#[derive(Clone)]
pub struct AuthKeys(Arc<Inner>);

struct Inner {
    decoding: DecodingKey,
    validation: Validation,
    /// `ADMIN_TOKENS` (and `ADMIN_TOKEN`, named `admin`): name and token of each admin.
    admins: Vec<(String, SecretString)>,
    /// `SERVICE_TOKENS`: name and token of each order service.
    services: Vec<(String, SecretString)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

impl AuthKeys {
    /// `leeway`: how long past `exp` a token is still accepted (clock skew between
    /// the issuer and us; `JWT_LEEWAY`).
    pub fn new(
        jwt_secret: &SecretString,
        admins: Vec<(String, SecretString)>,
        services: Vec<(String, SecretString)>,
        leeway: std::time::Duration,
    ) -> Self {
        // Only HS256: a token naming any other algorithm (including `none`) is refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = leeway.as_secs();
        AuthKeys(Arc::new(Inner {
            decoding: DecodingKey::from_secret(jwt_secret.expose_secret().as_bytes()),
            validation,
            admins,
            services,
        }))
    }

    fn user(&self, token: &str) -> Result<UserId, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.0.decoding, &self.0.validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind::*;
                ApiError::Unauthorized(match e.kind() {
                    ExpiredSignature => "the token has expired",
                    InvalidSignature => "the token's signature is invalid",
                    InvalidAlgorithm => "the token must be signed with HS256",
                    MissingRequiredClaim(_) => "the token must carry `sub` and `exp`",
                    _ => "the bearer token is not a valid JWT",
                })
            })?;
        UserId::parse(&data.claims.sub).ok_or(ApiError::Unauthorized(
            "the token's `sub` must be 1 to 128 characters",
        ))
    }

    /// The admin this token belongs to.
    fn admin(&self, token: &str) -> Option<&str> {
        named(&self.0.admins, token)
    }

    /// The order service this token belongs to.
    fn service(&self, token: &str) -> Option<&str> {
        named(&self.0.services, token)
    }
}

/// The name whose token this is. Every token is compared, in constant time, so the
/// answer's timing says nothing about which one matched, or how many there are before it.
fn named<'a>(credentials: &'a [(String, SecretString)], token: &str) -> Option<&'a str> {
    let mut found = None;
    for (name, expected) in credentials {
        if same_secret(token, expected.expose_secret()) {
            found = Some(name.as_str());
        }
    }
    found
}

/// Compares a presented token with a secret in constant time, lengths included: both
/// are hashed first, since comparing slices of different lengths returns at once.
fn same_secret(token: &str, secret: &str) -> bool {
    use sha2::{Digest, Sha256};
    bool::from(Sha256::digest(token.as_bytes()).ct_eq(&Sha256::digest(secret.as_bytes())))
}

/// Mints a user token, as `voucherd token --sub alice` does.
pub fn mint(jwt_secret: &SecretString, sub: &str, ttl_secs: u64) -> anyhow::Result<String> {
    anyhow::ensure!(
        UserId::parse(sub).is_some(),
        "--sub must be 1 to 128 characters"
    );
    let exp = jsonwebtoken::get_current_timestamp() + ttl_secs;
    let claims = Claims {
        sub: sub.to_string(),
        exp,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(jwt_secret.expose_secret().as_bytes()),
    )?)
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value =
        parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized(
                "an Authorization: Bearer token is required",
            ))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the Authorization header is not valid"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::Unauthorized(
            "the Authorization header must be `Bearer <token>`",
        )),
    }
}

/// The authenticated end user.
#[derive(Debug, Clone)]
pub(crate) struct User(pub UserId);

impl FromRequestParts<AppState> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if state.auth.service(token).is_some() {
            // A service acts for users only at checkout (`Shopper`).
            return Err(ApiError::Forbidden);
        }
        state.auth.user(token).map(User)
    }
}

/// The header in which an order service names the user it acts for.
pub(crate) const ON_BEHALF_OF: &str = "on-behalf-of";

/// Who checks out: a user with their own JWT, or an order service acting for the user
/// it names in `On-Behalf-Of` (hours later, after the user's token expired). The
/// user is never taken from a body, path or query.
#[derive(Debug, Clone)]
pub(crate) struct Shopper {
    pub user: UserId,
    /// The order service, when one calls.
    pub service: Option<String>,
}

impl Shopper {
    /// Whose idempotency keys these are: the user's own, or the service's (whose
    /// fingerprints carry the user it named).
    /// The client address the per-IP limit counts: none for an order service, whose
    /// calls for every user come from its own few addresses.
    pub(crate) fn client_ip(&self, ip: Option<std::net::IpAddr>) -> Option<std::net::IpAddr> {
        if self.service.is_some() { None } else { ip }
    }

    pub(crate) fn scope(&self) -> crate::idempotency::Scope {
        match &self.service {
            Some(name) => crate::idempotency::Scope::service(name),
            None => crate::idempotency::Scope::user(&self.user),
        }
    }
}

impl FromRequestParts<AppState> for Shopper {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        let Some(service) = state.auth.service(token) else {
            return state.auth.user(token).map(|user| Shopper {
                user,
                service: None,
            });
        };
        // UTF-8, not only visible ASCII: a `sub` may be any text a JWT carries.
        let user = parts
            .headers
            .get(ON_BEHALF_OF)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
            .and_then(UserId::parse)
            .ok_or_else(|| {
                ApiError::Malformed(
                    "a service must name the user in On-Behalf-Of: 1 to 128 characters, no control characters".into(),
                )
            })?;
        Ok(Shopper {
            user,
            service: Some(service.to_string()),
        })
    }
}

/// An admin caller, by the name its token was given (`ADMIN_TOKENS`; `admin` for
/// `ADMIN_TOKEN`); a valid user JWT or service token here is 403, anything else 401.
#[derive(Debug, Clone)]
pub(crate) struct Admin(pub String);

impl Admin {
    /// Who made a change, as its event records it (`data.actor`).
    pub(crate) fn actor(&self) -> serde_json::Value {
        serde_json::json!({ "admin": self.0 })
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if let Some(name) = state.auth.admin(token) {
            Ok(Admin(name.to_string()))
        } else if state.auth.user(token).is_ok() || state.auth.service(token).is_some() {
            Err(ApiError::Forbidden)
        } else {
            Err(ApiError::Unauthorized("the admin token is not valid"))
        }
    }
}

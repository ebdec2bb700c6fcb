//! Authentication: user JWTs (HS256 only) and the admin bearer token, as extractors
//! so a handler cannot forget to check who is calling.

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
    admin_token: SecretString,
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
        admin_token: SecretString,
        leeway: std::time::Duration,
    ) -> Self {
        // Only HS256: a token naming any other algorithm (including `none`) is refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = leeway.as_secs();
        AuthKeys(Arc::new(Inner {
            decoding: DecodingKey::from_secret(jwt_secret.expose_secret().as_bytes()),
            validation,
            admin_token,
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

    fn is_admin(&self, token: &str) -> bool {
        let expected = self.0.admin_token.expose_secret().as_bytes();
        bool::from(token.as_bytes().ct_eq(expected))
    }
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
pub struct User(pub UserId);

impl FromRequestParts<AppState> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.auth.user(bearer(parts)?).map(User)
    }
}

/// An admin caller; a valid user JWT here is 403, anything else 401.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if state.auth.is_admin(token) {
            Ok(Admin)
        } else if state.auth.user(token).is_ok() {
            Err(ApiError::Forbidden)
        } else {
            Err(ApiError::Unauthorized("the admin token is not valid"))
        }
    }
}

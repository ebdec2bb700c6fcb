//! JSON and query-string parsing whose failures use the same problem+json shape as
//! every other error: a body not declared as JSON is 415, bad syntax is 400, a
//! well-formed body with bad values is 422.

use axum::{
    body::Bytes,
    extract::{FromRequestParts, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header, request::Parts},
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ApiError, FieldError};

/// The whole-body deadline (`BODY_READ_TIMEOUT`), read from the shared state
/// (`FromRef<AppState>`) by the extractor that reads bodies: a body still arriving
/// when it passes is refused with 408, so a client sending a byte at a time cannot
/// hold a request open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyDeadline(pub std::time::Duration);

impl BodyDeadline {
    /// `BODY_READ_TIMEOUT`'s default.
    pub(crate) const DEFAULT: std::time::Duration = std::time::Duration::from_secs(10);
}

/// Maps a failure to read the body: over the limit is 413, anything else is 400.
pub(crate) fn body_rejection(r: BytesRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge
    } else {
        ApiError::Malformed("the request body could not be read".into())
    }
}

/// Whether the request says its body is JSON: `application/json` or any
/// `application/*+json` (RFC 6839, e.g. `application/merge-patch+json`), with or
/// without parameters, in any case. Two `Content-Type` fields are not a declaration
/// but a contradiction, so they do not count.
pub(crate) fn declares_json(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let Some(media) = value
        .to_str()
        .ok()
        .and_then(|v| v.parse::<mime::Mime>().ok())
    else {
        return false;
    };
    media.type_() == mime::APPLICATION
        && (media.subtype() == mime::JSON || media.suffix() == Some(mime::JSON))
}

/// Refuses a non-empty body that was not declared as JSON (415): parsed anyway, a
/// form's `a=1&b=2` would be answered as if it were a JSON mistake. An empty body
/// declares nothing and needs no type.
pub(crate) fn require_json(declared: bool, body: &Bytes) -> Result<(), ApiError> {
    if body.is_empty() || declared {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// Parses a body into a JSON value; an empty body, or `null`, reads as `{}`.
pub fn parse_value(bytes: &Bytes) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    let parsed = serde_json::from_slice(bytes).map(|v| match v {
        Value::Null => Value::Object(Default::default()),
        v => v,
    });
    parsed.map_err(|e| {
        ApiError::Malformed(format!(
            "the body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// Deserialises a body into the route's type, naming the offending field. Reads the
/// bytes themselves (not a parsed `Value`) so a repeated field is refused rather than
/// silently resolved, and accepts only a JSON object, as every body here is one.
pub fn from_body<T: DeserializeOwned>(bytes: &Bytes, value: &Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::validation("", "the body must be a JSON object"));
    }
    let empty = bytes.iter().all(u8::is_ascii_whitespace)
        || value.as_object().is_some_and(|m| m.is_empty());
    let result = if empty {
        serde_path_to_error::deserialize(value.clone())
    } else {
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(bytes))
    };
    result.map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        ApiError::Validation(vec![FieldError::new(field, e.inner().to_string())])
    })
}

/// The body of a route that takes no parameters: nothing, or `{}`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmptyBody {}

/// A query string parsed into `T`; a bad value is 422 naming the parameter.
#[derive(Debug)]
pub(crate) struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|e| {
                ApiError::Validation(vec![FieldError::new(
                    e.path().to_string(),
                    e.inner().to_string(),
                )])
            })
    }
}

/// A page size from the query: `default` when absent, else 1 to `max`.
pub(crate) fn page_limit(limit: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::validation(
            "limit",
            format!("must be from 1 to {max}"),
        ))
    }
}

/// An opaque list cursor (the last id of the previous page).
pub(crate) fn cursor(cursor: Option<&str>) -> Result<Option<uuid::Uuid>, ApiError> {
    cursor
        .map(uuid::Uuid::parse_str)
        .transpose()
        .map_err(|_| ApiError::validation("cursor", "is not a cursor this API returned"))
}

#[cfg(test)]
mod media_types {
    use super::*;
    use axum::http::HeaderValue;

    fn with(types: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for t in types {
            headers.append(header::CONTENT_TYPE, HeaderValue::from_static(t));
        }
        headers
    }

    #[test]
    fn json_and_json_suffixed_types_are_json_in_any_case_with_parameters() {
        for t in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;Charset=UTF-8",
            "application/merge-patch+json",
            "APPLICATION/MERGE-PATCH+JSON; charset=\"utf-8\"",
            "application/problem+json",
        ] {
            assert!(declares_json(&with(&[t])), "{t}");
        }
    }

    #[test]
    fn other_types_missing_or_repeated_types_are_not_json() {
        for types in [
            &[][..],
            &["application/x-www-form-urlencoded"],
            &["text/json"],
            &["text/plain"],
            &["application/jsonp"],
            &["application/json-seq"],
            &["multipart/form-data; boundary=x"],
            &["json"],
            &[""],
            &["application/json", "application/json"],
        ] {
            assert!(!declares_json(&with(types)), "{types:?}");
        }
    }

    #[test]
    fn only_a_non_empty_body_needs_a_type() {
        assert!(require_json(false, &Bytes::new()).is_ok());
        assert!(require_json(true, &Bytes::from_static(b"{}")).is_ok());
        assert!(matches!(
            require_json(false, &Bytes::from_static(b"a=1")),
            Err(ApiError::UnsupportedMediaType)
        ));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a client sends as a body, parsing answers with a 4xx error or a
        /// value: it never panics.
        #[test]
        fn any_body_parses_or_is_refused(raw in prop::collection::vec(any::<u8>(), 0..512)) {
            let bytes = Bytes::from(raw);
            if let Ok(v) = parse_value(&bytes) {
                let _ = from_body::<crate::json::EmptyBody>(&bytes, &v);
            }
        }
    }
}

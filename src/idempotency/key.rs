//! The pure half of idempotency, safe to touch: what a key is (`IdempotencyKey`),
//! whose it is (`Scope`), and what makes two requests the same request (the canonical
//! JSON, the canonical path and the fingerprint over them). No state, no I/O.

use axum::extract::Request;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// A validated key: 8–255 printable ASCII characters. The bare form and the quoted
/// structured-field string form (`"abc…"`, with `\"` and `\\` escapes) name the same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &[u8]) -> Result<Self, ApiError> {
        let raw = std::str::from_utf8(raw).map_err(|_| invalid_key())?.trim();
        let key = if raw.len() >= 2 && raw.starts_with('"') && raw.ends_with('"') {
            let mut out = String::with_capacity(raw.len());
            let mut chars = raw[1..raw.len() - 1].chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some(e @ ('"' | '\\')) => out.push(e),
                        _ => return Err(invalid_key()),
                    },
                    '"' => return Err(invalid_key()),
                    c if (' '..='~').contains(&c) => out.push(c),
                    _ => return Err(invalid_key()),
                }
            }
            out
        } else {
            // A stray quote at either end is a broken quoted form, not a bare key.
            if raw.starts_with('"')
                || raw.ends_with('"')
                || !raw.chars().all(|c| ('!'..='~').contains(&c))
            {
                return Err(invalid_key());
            }
            raw.to_string()
        };
        if (8..=255).contains(&key.len()) {
            Ok(IdempotencyKey(key))
        } else {
            Err(invalid_key())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn invalid_key() -> ApiError {
    ApiError::IdempotencyKeyInvalid(
        "the Idempotency-Key must be 8 to 255 printable ASCII characters",
    )
}

/// Who a key belongs to: the same key from two callers is two unrelated keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope(String);

impl Scope {
    pub fn user(user: &crate::domain::UserId) -> Self {
        Scope(format!("user:{}", user.as_str()))
    }

    pub fn admin() -> Self {
        Scope("admin".to_string())
    }

    /// An order service's keys, whichever user it acts for.
    pub fn service(name: &str) -> Self {
        Scope(format!("service:{name}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Canonical JSON: object keys sorted, no insignificant whitespace. Two bodies that
/// differ only in key order or spacing have the same canonical form.
pub fn canonical_json(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                out.push('{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(v, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// SHA-256 over method, path (which carries the route and its parameters), the
/// canonical body and, where an order service names one, the user it acts for (a
/// request without `On-Behalf-Of` hashes exactly as before that header existed).
pub fn fingerprint(method: &str, path: &str, body: &Value, on_behalf_of: Option<&[u8]>) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update(b"\n");
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(canonical_json(body).as_bytes());
    if let Some(user) = on_behalf_of {
        h.update(b"\non-behalf-of:");
        h.update(user);
    }
    h.finalize().to_vec()
}

/// The path as the fingerprint sees it: each path parameter in the spelling the
/// route parses it to (an id as a lower-case hyphenated UUID, a voucher code in
/// upper case), so a retry that writes the same id another way (`urn:uuid:…`,
/// braces, capitals) is the same request. A path already canonical comes out byte for
/// byte as it came in, so keys recorded before this existed still replay. A value
/// the route will refuse anyway is kept as decoded.
pub(super) async fn canonical_path(req: &mut Request) -> String {
    use axum::{
        RequestExt,
        extract::{MatchedPath, RawPathParams},
    };
    let raw = req.uri().path().to_string();
    let Some(template) = req.extensions().get::<MatchedPath>().cloned() else {
        return raw;
    };
    let Ok(params) = req.extract_parts::<RawPathParams>().await else {
        return raw;
    };
    let canonical = |name: &str, value: &str| -> String {
        let parsed = match name {
            "id" => uuid::Uuid::parse_str(value)
                .ok()
                .map(|u| u.hyphenated().to_string()),
            "code" => crate::domain::VoucherCode::parse(value)
                .ok()
                .map(|c| c.as_str().to_string()),
            _ => None,
        };
        parsed.unwrap_or_else(|| value.to_string())
    };
    let mut path = String::with_capacity(raw.len());
    for (i, segment) in template.as_str().split('/').enumerate() {
        if i > 0 {
            path.push('/');
        }
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => match params.iter().find(|(n, _)| *n == name) {
                Some((_, value)) => path.push_str(&canonical(name, value)),
                None => return raw,
            },
            None => path.push_str(segment),
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Found by `cargo fuzz` (fuzz/request_input): without correctly rounded float
    /// parsing, a large number printed in canonical form parsed back to another
    /// float, so a retry that reformatted it would fingerprint differently.
    #[test]
    fn canonical_form_of_a_large_float_is_a_fixed_point() {
        let v: Value =
            serde_json::from_str("44444444444444444444444444444444444444444444444").unwrap();
        let canonical = canonical_json(&v);
        let again: Value = serde_json::from_str(&canonical).unwrap();
        assert_eq!(canonical, canonical_json(&again));
        assert_eq!(
            fingerprint("POST", "/x", &v, None),
            fingerprint("POST", "/x", &again, None)
        );
    }

    #[test]
    fn bare_and_quoted_forms_name_the_same_key() {
        let bare = IdempotencyKey::parse(b"3f0c-abcdef").unwrap();
        let quoted = IdempotencyKey::parse(b"\"3f0c-abcdef\"").unwrap();
        assert_eq!(bare, quoted);
        assert_eq!(
            IdempotencyKey::parse(br#""a\"b\\cdefgh""#)
                .unwrap()
                .as_str(),
            r#"a"b\cdefgh"#
        );
    }

    #[test]
    fn malformed_keys_are_refused() {
        for raw in [
            &b"short"[..],
            &[b'a'; 256][..],
            b"has space inside",
            b"\"unterminated\\q\"",
            "caf\u{e9}-key-1".as_bytes(),
            b"\"\"",
            b"\"unterminated-key",
        ] {
            assert!(IdempotencyKey::parse(raw).is_err(), "{raw:?}");
        }
        assert!(IdempotencyKey::parse(&[b'a'; 255]).is_ok());
    }

    #[test]
    fn fingerprint_ignores_key_order_and_whitespace_only() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": null}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":null,"y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(
            fingerprint("POST", "/p", &a, None),
            fingerprint("POST", "/p", &b, None)
        );
        assert_ne!(
            fingerprint("POST", "/p", &a, None),
            fingerprint("POST", "/q", &a, None)
        );
        let c = json!({"a": {"x": null, "y": [2, 1]}, "b": 1});
        assert_ne!(
            fingerprint("POST", "/p", &a, None),
            fingerprint("POST", "/p", &c, None)
        );
        assert_eq!(canonical_json(&json!({"k\"": "v"})), r#"{"k\"":"v"}"#);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Arbitrary JSON, nested a few levels.
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[ -~]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Changes one leaf of a value, somewhere.
    fn mutate(v: &Value, pick: usize) -> Value {
        match v {
            Value::Array(items) if !items.is_empty() => {
                let mut items = items.clone();
                let i = pick % items.len();
                items[i] = mutate(&items[i], pick / 7);
                Value::Array(items)
            }
            Value::Object(map) if !map.is_empty() => {
                let mut map = map.clone();
                let k = map.keys().nth(pick % map.len()).unwrap().clone();
                let changed = mutate(&map[&k], pick / 7);
                map.insert(k, changed);
                Value::Object(map)
            }
            Value::Null => Value::Bool(false),
            Value::Bool(b) => Value::Bool(!b),
            Value::Number(n) => Value::from(n.as_i64().unwrap_or(0).wrapping_add(1)),
            Value::String(s) => Value::String(format!("{s}x")),
            Value::Array(_) => Value::Array(vec![Value::Null]),
            Value::Object(_) => {
                Value::Object([("k".to_string(), Value::Null)].into_iter().collect())
            }
        }
    }

    proptest! {
        #[test]
        fn equal_json_has_an_equal_fingerprint(v in json()) {
            let pretty: Value = serde_json::from_str(&serde_json::to_string_pretty(&v).unwrap()).unwrap();
            prop_assert_eq!(fingerprint("POST", "/p", &v, None), fingerprint("POST", "/p", &pretty, None));
            prop_assert_eq!(serde_json::from_str::<Value>(&canonical_json(&v)).unwrap(), v);
        }

        #[test]
        fn any_change_changes_the_fingerprint(v in json(), pick in any::<usize>()) {
            let changed = mutate(&v, pick);
            prop_assume!(changed != v);
            prop_assert_ne!(fingerprint("POST", "/p", &v, None), fingerprint("POST", "/p", &changed, None));
        }

        #[test]
        fn valid_keys_parse_in_both_forms(key in "[!#-~][!-~]{6,253}[!#-~]") {
            let bare = IdempotencyKey::parse(key.as_bytes()).unwrap();
            prop_assert_eq!(bare.as_str(), key.as_str());
            let quoted = format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""));
            prop_assert_eq!(IdempotencyKey::parse(quoted.as_bytes()).unwrap(), bare);
        }

        #[test]
        fn any_bytes_parse_or_are_refused_without_panicking(raw in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(k) = IdempotencyKey::parse(&raw) {
                prop_assert!((8..=255).contains(&k.as_str().len()));
                prop_assert!(k.as_str().chars().all(|c| (' '..='~').contains(&c)));
            }
        }

        #[test]
        fn keys_of_the_wrong_length_are_refused(key in "[a-z]{0,7}|[a-z]{256,300}") {
            prop_assert!(IdempotencyKey::parse(key.as_bytes()).is_err());
        }
    }
}

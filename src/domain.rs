//! Domain newtypes with fallible constructors: once a value has one of these types
//! it is known to be valid, so handlers and persistence never re-check it.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, FieldError};

/// A campaign id; a path segment that is not a UUID names no campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CampaignId(pub Uuid);

impl CampaignId {
    pub fn new() -> Self {
        // v7 ids sort by creation time, which makes them a stable list cursor.
        CampaignId(Uuid::now_v7())
    }

    pub fn parse(s: &str) -> Result<Self, ApiError> {
        Uuid::parse_str(s)
            .map(CampaignId)
            .map_err(|_| ApiError::CampaignNotFound)
    }
}

impl Default for CampaignId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for CampaignId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The caller's user id: the JWT `sub`, 1–128 characters, never taken from a body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    pub fn parse(s: &str) -> Option<Self> {
        let n = s.chars().count();
        ((1..=128).contains(&n) && !s.chars().any(char::is_control)).then(|| UserId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Crockford's base32 alphabet: upper-case letters and digits without I, L, O, U,
/// so a code read aloud or typed from a screen is not misread.
const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const CODE_LEN: usize = 16;

/// A voucher code: 16 symbols of base32, 80 random bits, unguessable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct VoucherCode(String);

impl VoucherCode {
    pub fn generate() -> Self {
        let code = (0..CODE_LEN)
            .map(|_| CODE_ALPHABET[rand::random_range(0..CODE_ALPHABET.len())] as char)
            .collect();
        VoucherCode(code)
    }

    /// Accepts a code in any letter case; anything else names no voucher.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let upper = s.to_ascii_uppercase();
        if upper.len() == CODE_LEN && upper.bytes().all(|b| CODE_ALPHABET.contains(&b)) {
            Ok(VoucherCode(upper))
        } else {
            Err(ApiError::VoucherNotFound)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An ISO 4217 alphabetic code (three upper-case letters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "VND", pattern = "^[A-Z]{3}$")]
pub struct Currency(String);

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Currency(s))
        } else {
            Err(format!("`{s}` is not an ISO 4217 code such as VND or EUR"))
        }
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.0
    }
}

impl Currency {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a voucher takes off an order, in integer minor units of `currency`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Discount {
    /// A fixed amount off.
    Fixed {
        #[schema(minimum = 1)]
        amount: i64,
        currency: Currency,
    },
    /// A share of the order in basis points (1/100 of a percent), capped at `max_amount`.
    Percent {
        #[schema(minimum = 1, maximum = 10_000)]
        basis_points: i32,
        #[schema(minimum = 1)]
        max_amount: i64,
        currency: Currency,
    },
}

impl Discount {
    pub fn validate(&self, path: &str, errors: &mut Vec<FieldError>) {
        match self {
            Discount::Fixed { amount, .. } => {
                if *amount <= 0 {
                    errors.push(FieldError::new(format!("{path}.amount"), "must be > 0"));
                }
            }
            Discount::Percent {
                basis_points,
                max_amount,
                ..
            } => {
                if !(1..=10_000).contains(basis_points) {
                    errors.push(FieldError::new(
                        format!("{path}.basis_points"),
                        "must be from 1 to 10000",
                    ));
                }
                if *max_amount <= 0 {
                    errors.push(FieldError::new(format!("{path}.max_amount"), "must be > 0"));
                }
            }
        }
    }

    pub fn currency(&self) -> &Currency {
        match self {
            Discount::Fixed { currency, .. } | Discount::Percent { currency, .. } => currency,
        }
    }

    /// The discount on an order, per API.md: fixed → min(amount, order); percent →
    /// min(floor(order × bp / 10000), max). Computed in i128 so no order overflows.
    pub fn discount_on(&self, order_amount: i64) -> i64 {
        match self {
            Discount::Fixed { amount, .. } => (*amount).min(order_amount),
            Discount::Percent {
                basis_points,
                max_amount,
                ..
            } => {
                let raw = i128::from(order_amount) * i128::from(*basis_points) / 10_000;
                i64::try_from(raw).unwrap_or(i64::MAX).min(*max_amount)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_16_base32_symbols_and_distinct() {
        let a = VoucherCode::generate();
        let b = VoucherCode::generate();
        assert_eq!(a.as_str().len(), 16);
        assert_ne!(a, b);
        assert_eq!(VoucherCode::parse(&a.as_str().to_lowercase()).unwrap(), a);
        assert!(VoucherCode::parse("ILOU0000ILOU0000").is_err());
        assert!(VoucherCode::parse("ABC").is_err());
    }

    #[test]
    fn user_ids_are_bounded() {
        assert!(UserId::parse("alice").is_some());
        assert!(UserId::parse("").is_none());
        assert!(UserId::parse(&"x".repeat(129)).is_none());
        assert!(UserId::parse("a\nb").is_none());
    }

    #[test]
    fn discount_arithmetic_floors_and_caps() {
        let vnd = Currency::try_from("VND".to_string()).unwrap();
        let pct = Discount::Percent {
            basis_points: 1000,
            max_amount: 100_000,
            currency: vnd.clone(),
        };
        assert_eq!(pct.discount_on(250_000), 25_000);
        assert_eq!(pct.discount_on(19), 1);
        assert_eq!(pct.discount_on(5_000_000), 100_000);
        assert_eq!(pct.discount_on(i64::MAX), 100_000);
        let fixed = Discount::Fixed {
            amount: 50_000,
            currency: vnd,
        };
        assert_eq!(fixed.discount_on(30_000), 30_000);
        assert_eq!(fixed.discount_on(300_000), 50_000);
    }

    #[test]
    fn discount_rejects_unknown_fields() {
        let v = serde_json::json!({"type": "fixed", "amount": 1, "currency": "VND", "x": 1});
        assert!(serde_json::from_value::<Discount>(v).is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn vnd() -> Currency {
        Currency::try_from("VND".to_string()).unwrap()
    }

    proptest! {
        #[test]
        fn percent_discount_is_the_floor_capped_and_never_overflows(
            order in 1i64..=i64::MAX, bp in 1i32..=10_000, max in 1i64..=i64::MAX,
        ) {
            let d = Discount::Percent { basis_points: bp, max_amount: max, currency: vnd() };
            let got = d.discount_on(order);
            let exact = (order as i128 * bp as i128) / 10_000; // floor for positives
            prop_assert_eq!(got as i128, exact.min(max as i128));
            prop_assert!(got >= 0 && got <= order && got <= max);
        }

        #[test]
        fn fixed_discount_never_exceeds_the_order(order in 1i64..=i64::MAX, amount in 1i64..=i64::MAX) {
            let d = Discount::Fixed { amount, currency: vnd() };
            prop_assert_eq!(d.discount_on(order), amount.min(order));
        }

        #[test]
        fn voucher_codes_round_trip_and_strangers_are_refused(s in "\\PC{0,40}") {
            let code = VoucherCode::generate();
            prop_assert_eq!(VoucherCode::parse(&code.as_str().to_lowercase()).unwrap(), code);
            if let Ok(c) = VoucherCode::parse(&s) {
                prop_assert_eq!(c.as_str().len(), 16);
                prop_assert!(c.as_str().bytes().all(|b| CODE_ALPHABET.contains(&b)));
            }
        }
    }
}

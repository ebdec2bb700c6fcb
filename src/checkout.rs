//! The checkout rules in one pure function: whether a voucher may be redeemed on an
//! order, and for how much. The redemption (inside its transaction, with the order
//! row locked) and the quote (without an effect) both gather the facts and ask
//! `Checkout::decide`, so a quote always names the answer the redemption would give,
//! and the fuzz target `money` exercises the very function the transaction uses.

use chrono::{DateTime, Utc};

use crate::{domain::Discount, error::ApiError};

/// Everything the rules look at, as read from Postgres in one transaction.
#[derive(Debug, Clone)]
pub struct Checkout {
    /// Whether an admin voided the voucher.
    pub voucher_voided: bool,
    /// Whether the voucher is redeemed now (by any order).
    pub voucher_redeemed: bool,
    pub voucher_expires_at: DateTime<Utc>,
    pub discount: Discount,
    pub min_order_amount: i64,
    /// The order as this request names it.
    pub order_amount: i64,
    pub order_currency: String,
    /// The order as first recorded (amount, currency), if a redemption named it before.
    pub recorded_order: Option<(i64, String)>,
    /// The sum of the order's active redemptions' discounts.
    pub order_discounted: i64,
    /// The order's active redemptions of vouchers of this voucher's campaign.
    pub order_same_campaign: i64,
    /// How many vouchers of the campaign one order may take.
    pub max_per_order: i32,
    /// The instant Postgres judges by (the transaction's `now()`).
    pub now: DateTime<Utc>,
}

impl Checkout {
    /// The discount this redemption gives, or the refusal. Checks run in a fixed
    /// order, so the quote and the redemption name the same first reason: the
    /// voucher's state (voided, redeemed, expired), the currency, the order's identity, the minimum, then the
    /// order-level rules. A discount is never reduced to fit: an order it would take
    /// past its amount is refused.
    pub fn decide(&self) -> Result<i64, ApiError> {
        if self.voucher_voided {
            return Err(ApiError::VoucherVoided);
        }
        if self.voucher_redeemed {
            return Err(ApiError::VoucherAlreadyRedeemed);
        }
        if self.voucher_expires_at <= self.now {
            return Err(ApiError::VoucherExpired);
        }
        let currency = self.discount.currency().as_str();
        if currency != self.order_currency {
            return Err(ApiError::CurrencyMismatch(currency.to_string()));
        }
        if let Some((amount, currency)) = &self.recorded_order
            && (*amount != self.order_amount || *currency != self.order_currency)
        {
            return Err(ApiError::OrderMismatch {
                amount: *amount,
                currency: currency.clone(),
            });
        }
        if self.order_amount < self.min_order_amount {
            return Err(ApiError::OrderBelowMinimum(self.min_order_amount));
        }
        if self.order_same_campaign >= i64::from(self.max_per_order) {
            return Err(ApiError::VoucherNotCombinable(self.max_per_order));
        }
        let discount = self.discount.discount_on(self.order_amount);
        let total = i128::from(self.order_discounted) + i128::from(discount);
        if total > i128::from(self.order_amount) {
            return Err(ApiError::OrderDiscountExceeded {
                amount: self.order_amount,
                discounted: self.order_discounted,
            });
        }
        Ok(discount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Currency;

    fn vnd() -> Currency {
        Currency::try_from("VND".to_string()).unwrap()
    }

    fn fixed(amount: i64) -> Checkout {
        Checkout {
            voucher_voided: false,
            voucher_redeemed: false,
            voucher_expires_at: Utc::now() + chrono::Duration::hours(1),
            discount: Discount::Fixed {
                amount,
                currency: vnd(),
            },
            min_order_amount: 0,
            order_amount: 120_000,
            order_currency: "VND".into(),
            recorded_order: None,
            order_discounted: 0,
            order_same_campaign: 0,
            max_per_order: 3,
            now: Utc::now(),
        }
    }

    #[test]
    fn the_third_voucher_of_50k_on_120k_is_refused_not_reduced() {
        let first = fixed(50_000);
        assert_eq!(first.decide().unwrap(), 50_000);
        let second = Checkout {
            order_discounted: 50_000,
            order_same_campaign: 1,
            recorded_order: Some((120_000, "VND".into())),
            ..fixed(50_000)
        };
        assert_eq!(second.decide().unwrap(), 50_000);
        let third = Checkout {
            order_discounted: 100_000,
            order_same_campaign: 2,
            ..second
        };
        assert!(matches!(
            third.decide(),
            Err(ApiError::OrderDiscountExceeded { .. })
        ));
    }

    #[test]
    fn an_order_seen_with_another_amount_or_currency_is_a_mismatch() {
        for recorded in [(100_000, "VND"), (120_000, "USD")] {
            let c = Checkout {
                recorded_order: Some((recorded.0, recorded.1.into())),
                ..fixed(1)
            };
            assert!(matches!(c.decide(), Err(ApiError::OrderMismatch { .. })));
        }
    }

    #[test]
    fn one_voucher_of_a_campaign_per_order_by_default() {
        let c = Checkout {
            max_per_order: 1,
            order_same_campaign: 1,
            order_discounted: 1,
            ..fixed(1)
        };
        assert!(matches!(c.decide(), Err(ApiError::VoucherNotCombinable(1))));
    }

    #[test]
    fn the_largest_amounts_never_overflow() {
        let c = Checkout {
            order_amount: i64::MAX,
            order_discounted: i64::MAX,
            ..fixed(i64::MAX)
        };
        assert!(matches!(
            c.decide(),
            Err(ApiError::OrderDiscountExceeded { .. })
        ));
    }
}

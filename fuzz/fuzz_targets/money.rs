//! Discount arithmetic over every i64 order amount and every discount: never
//! negative, never more than the order or the cap, never a panic or an overflow; and
//! the checkout decision the redemption's transaction takes (`Checkout::decide`)
//! never lets one order's discounts sum past its amount.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voucherd::{Checkout, Currency, Discount};

fuzz_target!(|input: (i64, i64, i32, bool, (i64, i64, i32))| {
    let (order, amount, basis_points, percent, (discounted, same_campaign, max_per_order)) = input;
    let currency = Currency::try_from("VND".to_string()).expect("VND is a currency");
    let discount = if percent {
        Discount::Percent {
            basis_points: basis_points.rem_euclid(10_000) + 1,
            max_amount: amount.checked_abs().unwrap_or(i64::MAX).max(1),
            currency,
        }
    } else {
        Discount::Fixed {
            amount: amount.checked_abs().unwrap_or(i64::MAX).max(1),
            currency,
        }
    };
    if order <= 0 {
        return; // orders are validated as > 0 before any discount is computed
    }
    let d = discount.discount_on(order);
    assert!(d >= 0 && d <= order, "{discount:?} on {order} gave {d}");
    if let Discount::Percent {
        basis_points,
        max_amount,
        ..
    } = &discount
    {
        assert!(d <= *max_amount);
        // Rounds down, never in the customer's favour: d ≤ order × bp / 10000 < d + 1.
        let exact = i128::from(order) * i128::from(*basis_points);
        assert!(i128::from(d) * 10_000 <= exact);
        if d < *max_amount {
            assert!(exact < (i128::from(d) + 1) * 10_000);
        }
    }
    // The order-level decision, over whatever was already taken off the order.
    let discounted = discounted.rem_euclid(order.saturating_add(1).max(1));
    let now = chrono::Utc::now();
    let checkout = Checkout {
        voucher_voided: false,
        voucher_redeemed: false,
        voucher_expires_at: now + chrono::Duration::hours(1),
        discount: discount.clone(),
        min_order_amount: 0,
        order_amount: order,
        order_currency: "VND".into(),
        recorded_order: Some((order, "VND".into())),
        order_discounted: discounted,
        order_same_campaign: same_campaign.rem_euclid(101),
        max_per_order: max_per_order.rem_euclid(100) + 1,
        now,
    };
    if let Ok(given) = checkout.decide() {
        assert_eq!(given, d, "the decision gives the voucher's discount, never reduced");
        assert!(
            i128::from(discounted) + i128::from(given) <= i128::from(order),
            "{discounted} + {given} on an order of {order}"
        );
        assert!(i64::from(checkout.max_per_order) > checkout.order_same_campaign);
    }
});

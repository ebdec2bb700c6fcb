//! Discount arithmetic over every i64 order amount and every discount: never
//! negative, never more than the order or the cap, never a panic or an overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voucherd::domain::{Currency, Discount};

fuzz_target!(|input: (i64, i64, i32, bool)| {
    let (order, amount, basis_points, percent) = input;
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
});

//! What a subscription snapshot says about its recurring revenue: every item's price (unit
//! amount, currency, interval, interval count, usage type) and quantity, and its discounts.
//! Read alongside the subscription fold's own facts, without changing them.
//!
//! Shapes: an item's price is `price` (`unit_amount`, `recurring.interval`,
//! `recurring.interval_count`, `recurring.usage_type`), or `plan` on old API versions
//! (`amount`, `interval`, `interval_count`, `usage_type`). Discounts: `discount` (one, before
//! 2024-06-20 stopped rendering it by default) or expanded objects in `discounts`; a discount
//! named only by its ID cannot be read and is left out. References:
//! <https://docs.stripe.com/api/subscriptions/object>, <https://docs.stripe.com/api/discounts/object>.

use crate::facts::optional_seconds;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A price interval (<https://docs.stripe.com/api/prices/object#price_object-recurring-interval>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Day,
    Week,
    Month,
    Year,
}

/// One subscription item, as far as revenue goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceItem {
    /// Minor units per unit per interval; `None` when the price has none (tiered, or only
    /// `unit_amount_decimal`).
    pub unit_amount: Option<i64>,
    pub currency: Option<String>,
    pub interval: Option<Interval>,
    pub interval_count: i64,
    /// `metered` prices bill usage in arrears: excluded from MRR and counted as such.
    pub metered: bool,
    pub quantity: i64,
}

/// A discount on the subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discount {
    /// Percent off, in hundredths of a percent (`percent_off` 12.5 is 1250), so no float is kept.
    pub percent_off_bp: Option<i64>,
    /// Amount off per invoice, minor units of `currency`.
    pub amount_off: Option<i64>,
    pub currency: Option<String>,
    /// `once` discounts never recur, so they do not reduce MRR.
    pub recurring: bool,
    /// When the discount stops applying (`end`), Unix seconds; `None` for `forever`.
    pub end: Option<i64>,
}

/// A subscription's prices and discounts, as one snapshot shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pricing {
    pub items: Vec<PriceItem>,
    pub discounts: Vec<Discount>,
}

/// Whether the pricing reader looks at members named `key`.
pub(crate) fn reads_field(key: &str) -> bool {
    matches!(
        key,
        "unit_amount"
            | "recurring"
            | "interval"
            | "interval_count"
            | "usage_type"
            | "discount"
            | "discounts"
            | "coupon"
            | "percent_off"
            | "amount_off"
            | "duration"
            | "end"
    )
}

/// Reads a subscription object's items and discounts. Errors name the unreadable field.
pub fn read(object: &Value) -> Result<Pricing, String> {
    let items = object.pointer("/items/data").and_then(Value::as_array);
    let items = items
        .into_iter()
        .flatten()
        .map(item)
        .collect::<Result<Vec<_>, _>>()?;
    let mut discounts = Vec::new();
    let listed = object.get("discounts").and_then(Value::as_array);
    for value in object
        .get("discount")
        .into_iter()
        .chain(listed.into_iter().flatten())
    {
        if value.is_object() {
            discounts.push(discount(value)?);
        }
    }
    Ok(Pricing { items, discounts })
}

fn item(item: &Value) -> Result<PriceItem, String> {
    let (price, recurring) = match item.get("price").filter(|p| p.is_object()) {
        Some(price) => (price, price.get("recurring").unwrap_or(&Value::Null)),
        None => {
            let plan = item.get("plan").unwrap_or(&Value::Null);
            (plan, plan)
        }
    };
    let unit_amount = match price.get("unit_amount").or_else(|| price.get("amount")) {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().ok_or("price `unit_amount` must be an integer")?),
    };
    let interval = match recurring.get("interval").and_then(Value::as_str) {
        None => None,
        Some("day") => Some(Interval::Day),
        Some("week") => Some(Interval::Week),
        Some("month") => Some(Interval::Month),
        Some("year") => Some(Interval::Year),
        Some(other) => return Err(format!("unknown price interval {other:?}")),
    };
    let interval_count = match recurring.get("interval_count") {
        None | Some(Value::Null) => 1,
        Some(v) => v
            .as_i64()
            .filter(|n| (1..=1_000).contains(n))
            .ok_or("price `interval_count` must be a positive integer")?,
    };
    let quantity = match item.get("quantity") {
        None | Some(Value::Null) => 1,
        Some(v) => v.as_i64().ok_or("item `quantity` must be an integer")?,
    };
    Ok(PriceItem {
        unit_amount,
        currency: price
            .get("currency")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase),
        interval,
        interval_count,
        metered: recurring.get("usage_type").and_then(Value::as_str) == Some("metered"),
        quantity,
    })
}

fn discount(value: &Value) -> Result<Discount, String> {
    let coupon = value.get("coupon").unwrap_or(&Value::Null);
    let percent_off_bp = match coupon.get("percent_off") {
        None | Some(Value::Null) => None,
        // Stripe allows two decimals: hundredths of a percent are exact integers.
        Some(v) => Some(
            v.as_f64()
                .filter(|p| (0.0..=100.0).contains(p))
                .map(|p| (p * 100.0).round() as i64)
                .ok_or("coupon `percent_off` must be a number from 0 to 100")?,
        ),
    };
    let amount_off = match coupon.get("amount_off") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().ok_or("coupon `amount_off` must be an integer")?),
    };
    Ok(Discount {
        percent_off_bp,
        amount_off,
        currency: coupon
            .get("currency")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase),
        recurring: coupon.get("duration").and_then(Value::as_str) != Some("once"),
        end: optional_seconds(value, "end")?,
    })
}

//! The plans file (`LEDGER_PLANS_FILE`, TOML) and the pure rule that turns a tenant's pricing
//! into its entitlement. No I/O and no clock here: the caller passes the time.
//!
//! ```toml
//! [plans.pro]
//! prices = ["price_pro_monthly", "price_pro_yearly"]   # Stripe price IDs
//! products = ["prod_pro"]    # Stripe product IDs: every price of the product
//! features = ["courses", "analytics"]
//! grace_period = "7d"    # past_due keeps access this long after the failed payment
//! ```
//!
//! A price mapping outranks a product mapping: a tenant's price in some plan's `prices` gives
//! that plan even when its product is in another plan's `products` (so one price of a product
//! can be sold as another plan). A price or a product in two plans, an unknown key, or a
//! malformed duration is refused with the line it is on. A tenant whose price and product are in
//! no plan is reported as `unknown_price`, never guessed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Grace period of a plan that sets none: 7 days.
pub const GRACE_PERIOD_DEFAULT_SECS: i64 = 7 * 86_400;

/// The plans, checked: each price maps to one plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plans {
    pub plans: BTreeMap<String, Plan>,
}

/// One plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub prices: Vec<String>,
    /// Stripe product IDs: a tenant whose price is in no plan's `prices` gets the plan of its
    /// price's product.
    #[serde(default)]
    pub products: Vec<String>,
    pub features: Vec<String>,
    /// How long `past_due` keeps access after the failed payment, seconds.
    pub grace_period_secs: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default)]
    plans: BTreeMap<String, PlanShape>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanShape {
    #[serde(default)]
    prices: Vec<toml::Spanned<String>>,
    #[serde(default)]
    products: Vec<toml::Spanned<String>>,
    #[serde(default)]
    features: Vec<String>,
    grace_period: Option<toml::Spanned<String>>,
}

/// A plans file that cannot be used; the message names the line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlansError(pub String);

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Plans {
    /// Parses and checks a plans file's text.
    pub fn parse(text: &str) -> Result<Plans, PlansError> {
        let shape: FileShape = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            PlansError(match line {
                Some(line) => format!("line {line}: {}", e.message()),
                None => e.message().to_owned(),
            })
        })?;
        let mut seen_prices: BTreeMap<String, String> = BTreeMap::new();
        let mut seen_products: BTreeMap<String, String> = BTreeMap::new();
        let mut plans = BTreeMap::new();
        for (name, plan) in shape.plans {
            let grace_period_secs = match &plan.grace_period {
                None => GRACE_PERIOD_DEFAULT_SECS,
                Some(spanned) => parse_duration(spanned.get_ref()).ok_or_else(|| {
                    PlansError(format!(
                        "line {}: grace_period of plan {name:?} must be a whole number with a unit (s, m, h or d), such as \"7d\"",
                        line_of(text, spanned.span().start)
                    ))
                })?,
            };
            let prices = unique_ids(text, &name, "price", &plan.prices, &mut seen_prices)?;
            let products = unique_ids(text, &name, "product", &plan.products, &mut seen_products)?;
            plans.insert(
                name,
                Plan {
                    prices,
                    products,
                    features: plan.features,
                    grace_period_secs,
                },
            );
        }
        Ok(Plans { plans })
    }

    /// The plan `price_id` belongs to.
    pub fn plan_of(&self, price_id: &str) -> Option<(&str, &Plan)> {
        self.plans
            .iter()
            .find(|(_, plan)| plan.prices.iter().any(|p| p == price_id))
            .map(|(name, plan)| (name.as_str(), plan))
    }

    /// The plan `product_id` belongs to.
    pub fn plan_of_product(&self, product_id: &str) -> Option<(&str, &Plan)> {
        self.plans
            .iter()
            .find(|(_, plan)| plan.products.iter().any(|p| p == product_id))
            .map(|(name, plan)| (name.as_str(), plan))
    }

    /// The plan of a tenant's price and product: the price's plan, else the product's (a price
    /// mapping outranks a product mapping).
    pub fn plan_for(&self, price_id: &str, product_id: Option<&str>) -> Option<(&str, &Plan)> {
        self.plan_of(price_id)
            .or_else(|| product_id.and_then(|p| self.plan_of_product(p)))
    }
}

/// Checks that no ID of one `kind` (price, product) is in two plans; `seen` maps each ID met so
/// far to its plan. Errors name the line of the second occurrence.
fn unique_ids(
    text: &str,
    plan: &str,
    kind: &str,
    ids: &[toml::Spanned<String>],
    seen: &mut BTreeMap<String, String>,
) -> Result<Vec<String>, PlansError> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(other) = seen.insert(id.get_ref().clone(), plan.to_owned()) {
            return Err(PlansError(format!(
                "line {}: {kind} {:?} is in plans {other:?} and {plan:?}; a {kind} maps to one plan",
                line_of(text, id.span().start),
                id.get_ref()
            )));
        }
        out.push(id.get_ref().clone());
    }
    Ok(out)
}

/// `"30s"`, `"15m"`, `"12h"`, `"7d"` into seconds.
fn parse_duration(text: &str) -> Option<i64> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let number: i64 = text[..text.len() - unit.len_utf8()].trim().parse().ok()?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return None,
    };
    (number >= 0).then(|| number.checked_mul(scale)).flatten()
}

/// What a tenant may use: `full`, `grace` (past_due inside its grace period) or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Full,
    Grace,
    None,
}

impl Access {
    /// The API's (and the table's) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Full => "full",
            Access::Grace => "grace",
            Access::None => "none",
        }
    }
}

/// The facts of `tenant_pricing` an entitlement depends on.
#[derive(Debug, Clone)]
pub struct PricingFacts {
    pub status: Option<String>,
    pub price_id: Option<String>,
    /// The product of `price_id`.
    pub product_id: Option<String>,
    pub last_payment_failed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// A tenant's entitlement.
#[derive(Debug, Clone, PartialEq)]
pub struct Entitlement {
    pub plan: Option<String>,
    /// The plan's features while access is `full` or `grace`; empty otherwise.
    pub features: Vec<String>,
    pub access: Access,
    /// Why: the subscription status (`active`, `trialing`, `past_due`, `canceled`, ...),
    /// `past_due_grace_expired`, `unknown_price` or `no_price`.
    pub reason: String,
    /// End of the grace period, for `past_due`.
    pub grace_until: Option<DateTime<Utc>>,
}

/// The entitlement `pricing` gives under `plans` at `now`.
///
/// `active` and `trialing` give full access; `past_due` gives `grace` until the grace period
/// (from the failed payment, else from the last change) ends, then `none`; every other status
/// (`incomplete`, `incomplete_expired`, `canceled`, `unpaid`, `paused`) gives `none`. The plan
/// is the price's, else its product's ([`Plans::plan_for`]); a price whose product is in no plan
/// either gives `none` with reason `unknown_price`.
pub fn entitle(plans: &Plans, pricing: &PricingFacts, now: DateTime<Utc>) -> Entitlement {
    let Some(price_id) = pricing.price_id.as_deref() else {
        return none(None, "no_price", None);
    };
    let Some((name, plan)) = plans.plan_for(price_id, pricing.product_id.as_deref()) else {
        return none(None, "unknown_price", None);
    };
    let status = pricing.status.as_deref().unwrap_or("unknown");
    let full = |access, reason: &str, grace_until| Entitlement {
        plan: Some(name.to_owned()),
        features: plan.features.clone(),
        access,
        reason: reason.to_owned(),
        grace_until,
    };
    match status {
        "active" | "trialing" => full(Access::Full, status, None),
        "past_due" => {
            let since = pricing.last_payment_failed_at.unwrap_or(pricing.updated_at);
            let until = since + chrono::Duration::seconds(plan.grace_period_secs);
            if now < until {
                full(Access::Grace, "past_due", Some(until))
            } else {
                none(Some(name), "past_due_grace_expired", Some(until))
            }
        }
        other => none(Some(name), other, None),
    }
}

fn none(plan: Option<&str>, reason: &str, grace_until: Option<DateTime<Utc>>) -> Entitlement {
    Entitlement {
        plan: plan.map(str::to_owned),
        features: Vec::new(),
        access: Access::None,
        reason: reason.to_owned(),
        grace_until,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[plans.basic]
prices = ["price_basic"]
features = ["courses"]

[plans.pro]
prices = ["price_pro_m", "price_pro_y"]
features = ["courses", "analytics"]
grace_period = "3d"
"#;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn pricing(status: &str, price: &str, failed_at: Option<i64>) -> PricingFacts {
        PricingFacts {
            status: Some(status.into()),
            price_id: Some(price.into()),
            product_id: None,
            last_payment_failed_at: failed_at.map(at),
            updated_at: at(1_000),
        }
    }

    #[test]
    fn prices_map_to_plans_and_statuses_to_access() {
        let plans = Plans::parse(FILE).unwrap();
        let e = entitle(&plans, &pricing("active", "price_pro_y", None), at(0));
        assert_eq!((e.plan.as_deref(), e.access), (Some("pro"), Access::Full));
        assert_eq!(e.features, ["courses", "analytics"]);
        let e = entitle(&plans, &pricing("canceled", "price_basic", None), at(0));
        assert_eq!((e.access, e.reason.as_str()), (Access::None, "canceled"));
        assert!(e.features.is_empty());
        let e = entitle(&plans, &pricing("active", "price_other", None), at(0));
        assert_eq!((e.plan, e.reason.as_str()), (None, "unknown_price"));
    }

    #[test]
    fn past_due_keeps_access_for_the_grace_period() {
        let plans = Plans::parse(FILE).unwrap();
        let failed = pricing("past_due", "price_pro_m", Some(10_000));
        let until = at(10_000 + 3 * 86_400);
        let e = entitle(&plans, &failed, at(10_001));
        assert_eq!((e.access, e.grace_until), (Access::Grace, Some(until)));
        let e = entitle(&plans, &failed, until);
        assert_eq!(
            (e.access, e.reason.as_str()),
            (Access::None, "past_due_grace_expired")
        );
        let basic = entitle(&plans, &pricing("past_due", "price_basic", Some(0)), at(1));
        assert_eq!(basic.grace_until, Some(at(GRACE_PERIOD_DEFAULT_SECS)));
    }

    #[test]
    fn errors_name_the_line() {
        let twice = "[plans.a]\nprices = [\"p\"]\n[plans.b]\nprices = [\"q\",\n \"p\"]\n";
        let error = Plans::parse(twice).unwrap_err().to_string();
        assert!(error.starts_with("line 5:"), "{error}");
        let bad = "[plans.a]\nprices = []\ngrace_period = \"soon\"\n";
        assert!(Plans::parse(bad).unwrap_err().0.starts_with("line 3:"));
        let unknown = "[plans.a]\nprices = []\nproduct = [\"prod_1\"]\n";
        assert!(Plans::parse(unknown).unwrap_err().0.starts_with("line 3:"));
        let product_twice =
            "[plans.a]\nproducts = [\"prod_1\"]\n[plans.b]\nproducts = [\"prod_1\"]\n";
        let error = Plans::parse(product_twice).unwrap_err().0;
        assert!(error.starts_with("line 4: product \"prod_1\""), "{error}");
        let syntax = "[plans.a]\nprices = [\n";
        assert!(Plans::parse(syntax).unwrap_err().0.starts_with("line "));
    }

    #[test]
    fn products_map_to_plans_and_prices_outrank_them() {
        let file = "[plans.basic]\nprices = [\"price_promo\"]\nfeatures = [\"courses\"]\n\
                    [plans.pro]\nproducts = [\"prod_pro\"]\nfeatures = [\"sso\"]\n";
        let plans = Plans::parse(file).unwrap();
        assert_eq!(plans.plans["pro"].products, ["prod_pro"]);
        let with_product = |price: &str, product: Option<&str>| PricingFacts {
            product_id: product.map(str::to_owned),
            ..pricing("active", price, None)
        };
        let e = entitle(&plans, &with_product("price_any", Some("prod_pro")), at(0));
        assert_eq!((e.plan.as_deref(), e.access), (Some("pro"), Access::Full));
        // The price's own mapping wins over its product's.
        let e = entitle(
            &plans,
            &with_product("price_promo", Some("prod_pro")),
            at(0),
        );
        assert_eq!(e.plan.as_deref(), Some("basic"));
        // Neither the price nor the product is in a plan: reported, not guessed.
        let e = entitle(&plans, &with_product("price_x", Some("prod_x")), at(0));
        assert_eq!((e.plan, e.reason.as_str()), (None, "unknown_price"));
        let e = entitle(&plans, &with_product("price_x", None), at(0));
        assert_eq!(e.reason, "unknown_price");
    }
}

//! MRR and its movements, a pure function of the log (README "For finance" gives the
//! definitions and their sources).
//!
//! Each subscription's snapshots are put in the fold's order (Stripe's `created`, then the
//! same-second tie-break of [`crate::ledger::Version`]; nothing after a terminal status). After
//! each one the subscription's MRR per currency is: for `active` and `past_due` only, the sum
//! over licensed items of unit amount x quantity normalized to a month (year / 12, week x 52 /
//! 12, day x 365 / 12, divided by `interval_count`; each item rounded half up to the minor
//! unit), less active recurring discounts (percent off, then amount off normalized the same
//! way), never below zero. A discount's `end` is a change of its own. Metered items are
//! excluded and counted. A tenant's MRR is the sum over its subscriptions, per currency.
//!
//! Movements: a tenant's changes within one hour of the first of them merge into one, which
//! takes effect at that first change; with p its MRR before and q after: `new` (p = 0 < q,
//! never above zero before), `reactivation` (p = 0 < q, above zero before), `expansion`
//! (0 < p < q), `contraction` (0 < q < p), `churn` (q = 0 < p). A month's opening is the sum
//! of tenants' MRR as the movements leave it before the month starts, its closing the same at
//! its end, so `closing = opening + new + reactivation + expansion - contraction - churn`
//! holds for every month, currency and tenant by construction.

use super::mrr::TenantRevenue;
use super::pricing::{Interval, Pricing};
use crate::envelope::Event;
use crate::ledger::Ledger;
use crate::model::Status;
use std::collections::{BTreeMap, BTreeSet};

/// Changes of one tenant closer than this to the first of them merge into one movement.
pub const MOVEMENT_MERGE_SECS: i64 = 3_600;

/// One movement of a tenant's MRR in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Movement {
    pub tenant_id: String,
    pub currency: String,
    /// `new`, `reactivation`, `expansion`, `contraction` or `churn`.
    pub kind: &'static str,
    /// MRR before and after, minor units.
    pub before: i64,
    pub after: i64,
    /// When it took effect (its first change), Unix seconds.
    pub at: i64,
    /// The event of its last change.
    pub event_id: String,
}

impl Movement {
    /// The movement's size, minor units (always positive).
    pub fn amount(&self) -> i64 {
        (self.after - self.before).abs()
    }
}

/// One month and currency of `GET /revenue`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonthRow {
    /// `YYYY-MM`.
    pub month: String,
    pub currency: String,
    pub opening_mrr: i64,
    pub new: i64,
    pub reactivation: i64,
    pub expansion: i64,
    pub contraction: i64,
    pub churn: i64,
    pub closing_mrr: i64,
    /// Tenants with MRR above zero at the month's end.
    pub subscribers: i64,
}

/// Every tenant's movements, per currency, in time order.
#[derive(Debug, Clone, Default)]
pub struct Revenue {
    movements: BTreeMap<(String, String), Vec<Movement>>,
}

/// Folds events one at a time (as they are read from the log), then renders the movements
/// as the projector's read model does ([`super::mrr`]).
#[derive(Debug, Default)]
pub struct RevenueBuilder {
    ledger: Ledger,
}

impl RevenueBuilder {
    /// A builder for a deployment in `livemode`: events of the other mode are left out.
    pub fn new(livemode: bool) -> RevenueBuilder {
        RevenueBuilder {
            ledger: Ledger::new(livemode),
        }
    }

    /// Folds one event: its tenant links, and its subscription snapshot if it is one (an
    /// event the fold cannot read is left out).
    pub fn add(&mut self, event: &Event) {
        let _ = self.ledger.apply(event);
    }

    /// The movements of every tenant whose subscriptions resolved to it.
    pub fn finish(self) -> Revenue {
        Revenue::from_tenants(self.ledger.revenue_models())
    }
}

/// MRR after a snapshot, per currency: `(mrr, metered items)`.
type Mrr = BTreeMap<String, (i64, i64)>;

/// `numerator / denominator` of a month for one interval of `interval` x `count`.
fn per_month(interval: Interval, count: i64) -> (i64, i64) {
    match interval {
        Interval::Month => (1, count),
        Interval::Year => (1, 12 * count),
        Interval::Week => (52, 12 * count),
        Interval::Day => (365, 12 * count),
    }
}

/// `value * numerator / denominator`, rounded half up (values are non-negative here).
fn scaled(value: i128, numerator: i64, denominator: i64) -> i64 {
    let n = value * i128::from(numerator);
    let d = i128::from(denominator);
    ((2 * n + d) / (2 * d)).clamp(0, i128::from(i64::MAX)) as i64
}

/// A subscription's MRR at instant `at` (discounts that ended by then no longer apply).
pub fn subscription_mrr(status: Status, pricing: &Pricing, at: i64) -> Mrr {
    let mut mrr = Mrr::new();
    if !matches!(status, Status::Active | Status::PastDue) {
        return mrr;
    }
    let mut period = None;
    for item in &pricing.items {
        let (Some(currency), Some(interval)) = (&item.currency, item.interval) else {
            continue;
        };
        let entry = mrr.entry(currency.clone()).or_default();
        if item.metered {
            entry.1 += 1;
            continue;
        }
        let (numerator, denominator) = per_month(interval, item.interval_count);
        period.get_or_insert((numerator, denominator));
        let amount = i128::from(item.unit_amount.unwrap_or(0)) * i128::from(item.quantity.max(0));
        entry.0 = entry
            .0
            .saturating_add(scaled(amount, numerator, denominator));
    }
    let active = pricing
        .discounts
        .iter()
        .filter(|d| d.recurring && d.end.is_none_or(|end| at < end));
    for discount in active {
        for (currency, (amount, _)) in mrr.iter_mut() {
            if let Some(bp) = discount.percent_off_bp {
                *amount -= scaled(i128::from(*amount), bp, 10_000);
            }
            let applies = discount.currency.as_ref().is_none_or(|c| c == currency);
            if let (Some(off), Some((numerator, denominator)), true) =
                (discount.amount_off, period, applies)
            {
                *amount -= scaled(i128::from(off), numerator, denominator);
            }
            *amount = (*amount).max(0);
        }
    }
    mrr
}

impl Revenue {
    /// Every tenant's movements as the read model holds them (`tenant -> currency ->
    /// movements`).
    pub fn from_tenants(tenants: BTreeMap<String, TenantRevenue>) -> Revenue {
        let movements = tenants
            .into_iter()
            .flat_map(|(tenant_id, currencies)| {
                currencies
                    .into_iter()
                    .map(move |(currency, list)| ((tenant_id.clone(), currency), list))
            })
            .collect();
        Revenue { movements }
    }

    /// Computes every tenant's movements from `events` (any order; duplicates harmless):
    /// subscriptions are attributed to tenants as the ledger resolves them after all events.
    pub fn from_events<'e>(events: impl IntoIterator<Item = &'e Event>, livemode: bool) -> Revenue {
        let mut builder = RevenueBuilder::new(livemode);
        for event in events {
            builder.add(event);
        }
        builder.finish()
    }

    /// Every movement that took effect in `[start, end)` (Unix seconds), by time then tenant.
    pub fn movements(&self, start: i64, end: i64) -> Vec<&Movement> {
        let mut out: Vec<&Movement> = self
            .movements
            .values()
            .flatten()
            .filter(|m| (start..end).contains(&m.at))
            .collect();
        out.sort_by(|a, b| {
            (a.at, &a.tenant_id, &a.currency).cmp(&(b.at, &b.tenant_id, &b.currency))
        });
        out
    }

    /// One row per month from `from` to `to` (inclusive, `(year, month)`) and currency,
    /// optionally for one currency and one tenant.
    pub fn months(
        &self,
        from: (i64, u32),
        to: (i64, u32),
        currency: Option<&str>,
        tenant_id: Option<&str>,
    ) -> Vec<MonthRow> {
        let selected: Vec<(&(String, String), &Vec<Movement>)> = self
            .movements
            .iter()
            .filter(|((t, c), _)| {
                tenant_id.is_none_or(|x| x == t) && currency.is_none_or(|x| x == c)
            })
            .collect();
        let currencies: BTreeSet<&String> = selected.iter().map(|((_, c), _)| c).collect();
        let mut rows = Vec::new();
        let mut month = from;
        while month <= to {
            let (start, end) = (month_start(month), month_start(next_month(month)));
            for &currency in &currencies {
                let mut row = MonthRow {
                    month: format!("{:04}-{:02}", month.0, month.1),
                    currency: currency.clone(),
                    ..MonthRow::default()
                };
                for (_, list) in selected.iter().filter(|((_, c), _)| c == currency) {
                    add_tenant_month(&mut row, list, start, end);
                }
                rows.push(row);
            }
            month = next_month(month);
        }
        rows
    }
}

fn add_tenant_month(row: &mut MonthRow, list: &[Movement], start: i64, end: i64) {
    let at = |instant: i64| {
        list.iter()
            .take_while(|m| m.at < instant)
            .last()
            .map_or(0, |m| m.after)
    };
    let (opening, closing) = (at(start), at(end));
    row.opening_mrr += opening;
    row.closing_mrr += closing;
    row.subscribers += i64::from(closing > 0);
    for movement in list.iter().filter(|m| (start..end).contains(&m.at)) {
        let slot = match movement.kind {
            "new" => &mut row.new,
            "reactivation" => &mut row.reactivation,
            "expansion" => &mut row.expansion,
            "contraction" => &mut row.contraction,
            _ => &mut row.churn,
        };
        *slot += movement.amount();
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The first instant of a month, Unix seconds (UTC).
pub fn month_start((year, month): (i64, u32)) -> i64 {
    days_from_civil(year, month, 1) * 86_400
}

/// The month after.
pub fn next_month((year, month): (i64, u32)) -> (i64, u32) {
    if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    }
}

/// Parses `YYYY-MM` (years 1970 to 9999).
pub fn parse_month(text: &str) -> Option<(i64, u32)> {
    let (year, month) = text.split_once('-')?;
    if year.len() != 4 || month.len() != 2 {
        return None;
    }
    let (year, month): (i64, u32) = (year.parse().ok()?, month.parse().ok()?);
    ((1970..=9999).contains(&year) && (1..=12).contains(&month)).then_some((year, month))
}

//! The fold's MRR history: what each subscription snapshot makes its MRR, kept compact, from
//! which every tenant's movements are rendered as a read model (`revenue_movements`), so the
//! revenue routes aggregate rows instead of re-folding the log (the definitions are in
//! [`super::revenue`]).
//!
//! Per subscription, each snapshot keeps only its place in the fold's order (see
//! [`OrderKey`]), its MRR per currency (currencies interned), the MRR at each later discount
//! end, and whether it is terminal: never the snapshot or its JSON. A snapshot that arrives late
//! is put in its place, so the history is a function of the set of events. A tenant's
//! movements are recomputed when one of its subscriptions changed, and sent again only when
//! they differ from what was last rendered. This module must not do I/O nor read a clock.

use super::pricing::Pricing;
use super::revenue::{subscription_mrr, Movement, MOVEMENT_MERGE_SECS};
use crate::ledger::Version;
use crate::model::Status;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

/// One tenant's movements per currency, in time order. A currency is listed once the tenant's
/// MRR in it changed, even when its changes merged into no movement (the revenue months then
/// show the currency with zeros, as the pure computation does).
pub type TenantRevenue = BTreeMap<String, Vec<Movement>>;

/// A currency's index in [`MrrHistory::currencies`].
type CurrencyIndex = u32;

/// MRR per currency after one snapshot, minor units, sorted by currency; one currency (the
/// usual case) is held inline.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum CompactMrr {
    One((CurrencyIndex, i64)),
    Many(Box<[(CurrencyIndex, i64)]>),
}

impl CompactMrr {
    fn as_slice(&self) -> &[(CurrencyIndex, i64)] {
        match self {
            CompactMrr::One(pair) => std::slice::from_ref(pair),
            CompactMrr::Many(pairs) => pairs,
        }
    }
}

/// A snapshot's place among its subscription's: Stripe's `created`, then the same-second
/// tie-break of [`crate::ledger::Version`] (type, lifecycle stage, period end, event ID).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
struct OrderKey {
    created: i64,
    type_rank: u8,
    status_rank: u8,
    period_end: i64,
    event_id: Box<str>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Snapshot {
    key: OrderKey,
    mrr: CompactMrr,
    /// `(end, MRR from then on)` for each discount ending after the snapshot, in time order.
    ends: Box<[(i64, CompactMrr)]>,
    terminal: bool,
}

/// Every subscription's MRR history, and a hash of each tenant's last rendered movements.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct MrrHistory {
    currencies: Vec<String>,
    currency_index: HashMap<String, CurrencyIndex>,
    /// Subscription ID → its snapshots in the fold's order.
    subscriptions: HashMap<String, Vec<Snapshot>>,
    rendered: HashMap<String, u64>,
}

/// A subscription's MRR step: `(at, event ID, MRR from then on)`.
type Step<'a> = (i64, &'a str, &'a [(CurrencyIndex, i64)]);

impl MrrHistory {
    /// Records a subscription snapshot ordered by `version` (the subscription fold's own, whose
    /// terminal flag is left out: a terminal snapshot ends the history where it falls in time).
    /// A duplicate changes nothing.
    pub(crate) fn fold(
        &mut self,
        subscription_id: &str,
        version: &Version,
        status: Status,
        pricing: &Pricing,
    ) {
        let key = OrderKey {
            created: version.created,
            type_rank: version.type_rank,
            status_rank: version.status_rank,
            period_end: version.period_end,
            event_id: version.event_id.as_str().into(),
        };
        if let Some(list) = self.subscriptions.get(subscription_id) {
            if list.binary_search_by(|s| s.key.cmp(&key)).is_ok() {
                return;
            }
        }
        let at = key.created;
        let mrr = self.compact(subscription_mrr(status, pricing, at));
        let mut ends: Vec<i64> = pricing
            .discounts
            .iter()
            .filter_map(|d| d.end)
            .filter(|end| *end > at)
            .collect();
        ends.sort_unstable();
        ends.dedup();
        let ends = ends
            .into_iter()
            .map(|end| (end, self.compact(subscription_mrr(status, pricing, end))))
            .collect();
        let snapshot = Snapshot {
            key,
            mrr,
            ends,
            terminal: status.is_terminal(),
        };
        let list = match self.subscriptions.get_mut(subscription_id) {
            Some(list) => list,
            None => self
                .subscriptions
                .entry(subscription_id.to_owned())
                .or_default(),
        };
        let place = list.partition_point(|s| s.key < snapshot.key);
        // A subscription has tens of snapshots: grow by a quarter, not double.
        if list.len() == list.capacity() {
            list.reserve_exact(list.len() / 4 + 1);
        }
        list.insert(place, snapshot);
    }

    fn compact(&mut self, mrr: BTreeMap<String, (i64, i64)>) -> CompactMrr {
        let mut out: Vec<(CurrencyIndex, i64)> = mrr
            .into_iter()
            .map(|(currency, (amount, _metered))| (self.intern(currency), amount))
            .collect();
        out.sort_unstable();
        match out.as_slice() {
            [one] => CompactMrr::One(*one),
            _ => CompactMrr::Many(out.into_boxed_slice()),
        }
    }

    fn intern(&mut self, currency: String) -> CurrencyIndex {
        if let Some(index) = self.currency_index.get(&currency) {
            return *index;
        }
        let index = CurrencyIndex::try_from(self.currencies.len()).expect("fewer currencies");
        self.currencies.push(currency.clone());
        self.currency_index.insert(currency, index);
        index
    }

    /// A tenant's movements from scratch, over the subscriptions attributed to it.
    pub(crate) fn tenant<'a>(
        &self,
        tenant_id: &str,
        subscription_ids: impl IntoIterator<Item = &'a String>,
    ) -> TenantRevenue {
        let subscriptions: Vec<Vec<Step<'_>>> = subscription_ids
            .into_iter()
            .filter_map(|id| self.subscriptions.get(id.as_str()))
            .map(|snapshots| steps(snapshots))
            .collect();
        tenant_changes(&subscriptions)
            .into_iter()
            .map(|(currency, changes)| {
                let currency = &self.currencies[currency as usize];
                (currency.clone(), merge(tenant_id, currency, changes))
            })
            .collect()
    }

    /// A tenant's movements when they differ from the last rendered (`Some` of an empty map:
    /// the tenant's rows are to be deleted).
    pub(crate) fn render<'a>(
        &mut self,
        tenant_id: &str,
        subscription_ids: impl IntoIterator<Item = &'a String>,
    ) -> Option<TenantRevenue> {
        let revenue = self.tenant(tenant_id, subscription_ids);
        let now = (!revenue.is_empty()).then(|| {
            let mut hasher = DefaultHasher::new();
            revenue.hash(&mut hasher);
            hasher.finish()
        });
        let before = match now {
            Some(hash) => self.rendered.insert(tenant_id.to_owned(), hash),
            None => self.rendered.remove(tenant_id),
        };
        (before != now).then_some(revenue)
    }

    /// Forgets what was rendered, so every tenant's movements are sent again.
    pub(crate) fn mark_all_changed(&mut self) {
        self.rendered.clear();
    }
}

/// A subscription's MRR after each snapshot (stopping after a terminal one), plus a step at
/// each discount end before the next snapshot.
fn steps(snapshots: &[Snapshot]) -> Vec<Step<'_>> {
    let mut steps = Vec::with_capacity(snapshots.len());
    for (i, snapshot) in snapshots.iter().enumerate() {
        let at = snapshot.key.created;
        let next_at = snapshots.get(i + 1).map_or(i64::MAX, |n| n.key.created);
        let event_id = &*snapshot.key.event_id;
        steps.push((at, event_id, snapshot.mrr.as_slice()));
        for (end, mrr) in snapshot.ends.iter() {
            if (at + 1..next_at).contains(end) {
                steps.push((*end, event_id, mrr.as_slice()));
            }
        }
        if snapshot.terminal {
            break;
        }
    }
    steps
}

/// A tenant's MRR per currency after each instant one of its subscriptions changed:
/// `currency -> [(at, MRR after, event ID)]`, only where the total changed. The event of an
/// instant is the greatest event ID among the steps at it.
fn tenant_changes<'a>(
    subscriptions: &[Vec<Step<'a>>],
) -> BTreeMap<CurrencyIndex, Vec<(i64, i64, &'a str)>> {
    let mut times: BTreeMap<i64, &str> = BTreeMap::new();
    for (at, event_id, _) in subscriptions.iter().flatten() {
        let slot = times.entry(*at).or_insert(event_id);
        if *event_id > *slot {
            *slot = event_id;
        }
    }
    let mut out: BTreeMap<CurrencyIndex, Vec<(i64, i64, &str)>> = BTreeMap::new();
    let mut last: BTreeMap<CurrencyIndex, i64> = BTreeMap::new();
    // Steps are in time order: each subscription's cursor only moves forward.
    let mut cursors = vec![0usize; subscriptions.len()];
    for (at, event_id) in times {
        let mut total: BTreeMap<CurrencyIndex, i64> = last.keys().map(|c| (*c, 0)).collect();
        for (steps, cursor) in subscriptions.iter().zip(cursors.iter_mut()) {
            while *cursor < steps.len() && steps[*cursor].0 <= at {
                *cursor += 1;
            }
            let Some((_, _, mrr)) = cursor.checked_sub(1).map(|i| steps[i]) else {
                continue;
            };
            for (currency, amount) in mrr {
                let slot = total.entry(*currency).or_default();
                *slot = slot.saturating_add(*amount);
            }
        }
        for (currency, amount) in total {
            if last.get(&currency).copied().unwrap_or(0) != amount {
                out.entry(currency)
                    .or_default()
                    .push((at, amount, event_id));
            }
            last.insert(currency, amount);
        }
    }
    out
}

/// Merges a tenant's changes in one currency into movements (see [`super::revenue`]).
fn merge(tenant_id: &str, currency: &str, changes: Vec<(i64, i64, &str)>) -> Vec<Movement> {
    let mut movements = Vec::new();
    let (mut value, mut counted_before) = (0i64, false);
    let mut changes = changes.into_iter().peekable();
    while let Some((first_at, mut after, mut event_id)) = changes.next() {
        while let Some((at, a, e)) = changes.peek() {
            if *at >= first_at + MOVEMENT_MERGE_SECS {
                break;
            }
            (after, event_id) = (*a, *e);
            changes.next();
        }
        let before = value;
        value = after;
        let kind = match (before, after) {
            (0, 0) => continue,
            (0, _) if counted_before => "reactivation",
            (0, _) => "new",
            (_, 0) => "churn",
            (p, q) if q > p => "expansion",
            (p, q) if q < p => "contraction",
            _ => continue,
        };
        counted_before |= after > 0;
        movements.push(Movement {
            tenant_id: tenant_id.to_owned(),
            currency: currency.to_owned(),
            kind,
            before,
            after,
            at: first_at,
            event_id: event_id.to_owned(),
        });
    }
    movements
}

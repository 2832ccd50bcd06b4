//! MRR and movements: Stripe's own example, normalization, discounts, the one-hour merge, and
//! the identity `closing = opening + new + reactivation + expansion - contraction - churn` for
//! random histories in any order.

use super::revenue::{month_start, parse_month, MonthRow, Revenue};
use crate::tests::event;
use crate::Event;
use proptest::prelude::*;
use serde_json::{json, Value};

/// 2024-01-01T00:00:00Z.
const JAN: i64 = 1_704_067_200;
const DAY: i64 = 86_400;

fn item(amount: i64, interval: &str, count: i64, quantity: i64) -> Value {
    json!({"price": {"id": format!("price_{amount}_{interval}"), "unit_amount": amount,
                     "currency": "usd", "recurring": {"interval": interval,
                     "interval_count": count, "usage_type": "licensed"}},
           "quantity": quantity})
}

fn sub(id: &str, created: i64, sub: &str, status: &str, items: Value, extra: Value) -> Event {
    let mut object = json!({
        "id": sub, "object": "subscription", "customer": format!("cus_{sub}"), "status": status,
        "created": JAN, "current_period_end": created + 30 * DAY, "items": {"data": items},
        "metadata": {"tenant_id": format!("t_{sub}")},
    });
    for (k, v) in extra.as_object().unwrap() {
        object[k] = v.clone();
    }
    let event_type = if status == "canceled" {
        "customer.subscription.deleted"
    } else {
        "customer.subscription.updated"
    };
    event(id, event_type, created, object)
}

fn january(events: &[Event]) -> MonthRow {
    let revenue = Revenue::from_events(events, false);
    let rows = revenue.months((2024, 1), (2024, 1), Some("usd"), None);
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows[0].clone()
}

#[test]
fn stripes_example_gives_12_500_00() {
    // https://docs.stripe.com/billing/subscriptions/analytics#mrr: 100 subscribers at 100.00
    // a month and 50 at 600.00 a year make 12,500.00 of MRR.
    let mut events = Vec::new();
    for n in 0..150 {
        let items = if n < 100 {
            json!([item(10_000, "month", 1, 1)])
        } else {
            json!([item(60_000, "year", 1, 1)])
        };
        let id = format!("sub_{n}");
        events.push(sub(
            &format!("evt_{n}"),
            JAN + n,
            &id,
            "active",
            items,
            json!({}),
        ));
    }
    let row = january(&events);
    assert_eq!(row.closing_mrr, 1_250_000);
    assert_eq!(
        (row.opening_mrr, row.new, row.subscribers),
        (0, 1_250_000, 150)
    );
}

#[test]
fn intervals_normalize_to_a_month_and_metered_prices_are_excluded() {
    let metered = json!({"price": {"unit_amount": 5, "currency": "usd",
        "recurring": {"interval": "month", "usage_type": "metered"}}});
    let items = json!([
        item(120_000, "year", 1, 1), // 10,000
        item(30_000, "month", 3, 1), // 10,000
        item(1_000, "week", 1, 1),   // 4,333.33 -> 4,333
        item(100, "day", 1, 2),      // 6,083.33 -> 6,083
        metered,
    ]);
    let row = january(&[sub("evt_1", JAN, "sub_a", "active", items, json!({}))]);
    assert_eq!(row.closing_mrr, 10_000 + 10_000 + 4_333 + 6_083);
}

#[test]
fn uncounted_statuses_and_cancel_at_period_end() {
    let items = || json!([item(5_000, "month", 1, 1)]);
    let events = [
        sub("evt_1", JAN, "sub_a", "trialing", items(), json!({})),
        sub(
            "evt_2",
            JAN + 14 * DAY,
            "sub_a",
            "active",
            items(),
            json!({}),
        ),
        sub(
            "evt_3",
            JAN + 20 * DAY,
            "sub_a",
            "active",
            items(),
            json!({"cancel_at_period_end": true}),
        ),
        sub(
            "evt_4",
            JAN + 25 * DAY,
            "sub_b",
            "incomplete",
            items(),
            json!({}),
        ),
        sub(
            "evt_5",
            JAN + 26 * DAY,
            "sub_c",
            "paused",
            items(),
            json!({}),
        ),
    ];
    let row = january(&events);
    assert_eq!(
        (row.new, row.closing_mrr, row.subscribers),
        (5_000, 5_000, 1)
    );
    let movements = Revenue::from_events(&events, false);
    let movements = movements.movements(JAN, JAN + 31 * DAY);
    assert_eq!(movements.len(), 1);
    assert_eq!(
        (movements[0].at, movements[0].event_id.as_str()),
        (JAN + 14 * DAY, "evt_2")
    );
}

#[test]
fn a_hundred_percent_coupon_then_its_end() {
    let coupon = |end: Value| json!({"discount": {"coupon": {"percent_off": 100, "duration": "repeating"}, "end": end}});
    let items = || json!([item(2_000, "month", 1, 1)]);
    let forever = [sub(
        "evt_1",
        JAN,
        "sub_a",
        "active",
        items(),
        coupon(Value::Null),
    )];
    let forever = Revenue::from_events(&forever, false);
    assert_eq!(
        forever.months((2024, 1), (2024, 1), None, None),
        vec![],
        "never above zero"
    );
    let ends = JAN + 10 * DAY;
    let events = [sub(
        "evt_1",
        JAN,
        "sub_a",
        "active",
        items(),
        coupon(json!(ends)),
    )];
    let revenue = Revenue::from_events(&events, false);
    let movements = revenue.movements(JAN, JAN + 31 * DAY);
    assert_eq!(movements.len(), 1);
    assert_eq!(
        (movements[0].kind, movements[0].at, movements[0].after),
        ("new", ends, 2_000)
    );
}

#[test]
fn proration_expansion_then_contraction_and_the_one_hour_merge() {
    let qty = |q| json!([item(1_000, "month", 1, q)]);
    let events = [
        sub("evt_1", JAN, "sub_a", "active", qty(1), json!({})),
        sub(
            "evt_2",
            JAN + 10 * DAY,
            "sub_a",
            "active",
            qty(3),
            json!({}),
        ),
        sub(
            "evt_3",
            JAN + 20 * DAY,
            "sub_a",
            "active",
            qty(2),
            json!({}),
        ),
        // Within the hour: 2 -> 5 -> 4 is one expansion of 2,000.
        sub(
            "evt_4",
            JAN + 25 * DAY,
            "sub_a",
            "active",
            qty(5),
            json!({}),
        ),
        sub(
            "evt_5",
            JAN + 25 * DAY + 1_800,
            "sub_a",
            "active",
            qty(4),
            json!({}),
        ),
    ];
    let row = january(&events);
    assert_eq!(
        (row.new, row.expansion, row.contraction),
        (1_000, 4_000, 1_000)
    );
    assert_eq!(row.closing_mrr, 4_000);
    let revenue = Revenue::from_events(&events, false);
    let last = revenue.movements(JAN + 25 * DAY, JAN + 26 * DAY);
    assert_eq!((last.len(), last[0].event_id.as_str()), (1, "evt_5"));
}

#[test]
fn churn_then_reactivation_across_months() {
    let items = || json!([item(60_000, "year", 1, 1)]);
    let feb = JAN + 31 * DAY;
    let events = [
        sub("evt_1", JAN, "sub_a", "active", items(), json!({})),
        sub(
            "evt_2",
            JAN + 20 * DAY,
            "sub_a",
            "canceled",
            items(),
            json!({}),
        ),
        sub(
            "evt_3",
            feb + 3 * DAY,
            "sub_a",
            "active",
            items(),
            json!({}),
        ), // absorbed
        {
            let mut second = sub(
                "evt_4",
                feb + 5 * DAY,
                "sub_b",
                "active",
                items(),
                json!({}),
            );
            second.object["metadata"]["tenant_id"] = json!("t_sub_a");
            second
        },
    ];
    let revenue = Revenue::from_events(&events, false);
    let rows = revenue.months((2024, 1), (2024, 2), None, Some("t_sub_a"));
    assert_eq!(
        (rows[0].new, rows[0].churn, rows[0].closing_mrr),
        (5_000, 5_000, 0)
    );
    assert_eq!((rows[1].reactivation, rows[1].closing_mrr), (5_000, 5_000));
}

#[test]
fn months_parse_and_start_in_utc() {
    assert_eq!(parse_month("2024-01"), Some((2024, 1)));
    assert_eq!(month_start((2024, 1)), JAN);
    assert_eq!(
        month_start((2024, 3)),
        JAN + 60 * DAY,
        "2024 is a leap year"
    );
    for bad in ["2024-13", "2024-1", "24-01", "2024-01-01", "x"] {
        assert_eq!(parse_month(bad), None, "{bad}");
    }
}

fn random_history() -> impl Strategy<Value = Vec<Event>> {
    let step = (0usize..3, 0i64..90, 0u8..5, 0i64..4, any::<bool>());
    proptest::collection::vec(step, 1..12).prop_map(|steps| {
        steps
            .into_iter()
            .enumerate()
            .map(|(i, (s, day, status, quantity, yearly))| {
                let status =
                    ["active", "past_due", "trialing", "canceled", "unpaid"][status as usize];
                let items = if yearly {
                    json!([item(12_345, "year", 1, quantity)])
                } else {
                    json!([item(999, "month", 1, quantity)])
                };
                let created = JAN + day * DAY + (i as i64) * 600;
                sub(
                    &format!("evt_{i}"),
                    created,
                    &format!("sub_{s}"),
                    status,
                    items,
                    json!({}),
                )
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn the_mrr_identity_holds_in_any_order(
        (events, shuffled) in random_history().prop_flat_map(|events| {
            (Just(events.clone()), Just(events).prop_shuffle())
        })
    ) {
        let revenue = Revenue::from_events(&events, false);
        let rows = revenue.months((2024, 1), (2024, 4), None, None);
        let again = Revenue::from_events(&shuffled, false).months((2024, 1), (2024, 4), None, None);
        prop_assert_eq!(&rows, &again);
        for tenant in ["t_sub_0", "t_sub_1", "t_sub_2", "nobody"] {
            let per_tenant = revenue.months((2024, 1), (2024, 4), None, Some(tenant));
            for row in rows.iter().chain(&per_tenant) {
                prop_assert_eq!(
                    row.closing_mrr,
                    row.opening_mrr + row.new + row.reactivation + row.expansion
                        - row.contraction - row.churn,
                    "{:?}", row
                );
            }
            for pair in per_tenant.windows(2) {
                prop_assert_eq!(pair[0].closing_mrr, pair[1].opening_mrr);
            }
        }
    }
}

/// A ledger resumed from a snapshot renders the same revenue movements as the one that wrote
/// it: the MRR history is part of the snapshot (a leader elected from one once started with
/// none, and its revenue rows then differed from a rebuild's).
#[test]
fn a_snapshot_carries_the_mrr_history() {
    use crate::Ledger;
    let before = [
        sub(
            "evt_r1",
            JAN,
            "sub_r",
            "active",
            json!([item(10_000, "month", 1, 1)]),
            json!({}),
        ),
        sub(
            "evt_r2",
            JAN + DAY,
            "sub_q",
            "active",
            json!([item(5_000, "month", 1, 2)]),
            json!({}),
        ),
    ];
    let after = [
        sub(
            "evt_r3",
            JAN + 3 * DAY,
            "sub_r",
            "active",
            json!([item(10_000, "month", 1, 3)]),
            json!({}),
        ),
        sub(
            "evt_r4",
            JAN + 4 * DAY,
            "sub_q",
            "canceled",
            json!([item(5_000, "month", 1, 2)]),
            json!({}),
        ),
    ];
    let mut original = Ledger::new(false);
    for e in &before {
        original.apply(e).unwrap();
    }
    original.take_changes();
    let mut resumed = Ledger::from_snapshot(&original.to_snapshot()).unwrap();
    for e in &after {
        original.apply(e).unwrap();
        resumed.apply(e).unwrap();
    }
    let (expected, got) = (original.take_changes(), resumed.take_changes());
    assert!(
        format!("{expected:?}").contains("evt_r3"),
        "the movements name their events: {expected:?}"
    );
    assert_eq!(got, expected);
}

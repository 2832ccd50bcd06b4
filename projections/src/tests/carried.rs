//! A ledger serialized mid-fold and read back folds on to the same read models: a tenant's
//! history pages carry the fold's state this way.

use super::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    #[test]
    fn a_ledger_carried_through_serde_folds_on_the_same(
        (events, cut) in histories().prop_flat_map(|events| {
            let n = events.len();
            (Just(events).prop_shuffle(), 0..=n)
        })
    ) {
        let mut whole = Ledger::new(false);
        let mut first = Ledger::new(false);
        for e in &events {
            whole.apply(e).unwrap();
        }
        for e in &events[..cut] {
            first.apply(e).unwrap();
        }
        let json = serde_json::to_vec(&first).unwrap();
        let mut carried: Ledger = serde_json::from_slice(&json).unwrap();
        prop_assert!(carried.is_consistent());
        // Money is not carried (see `Ledger`): the subscription side must be exact.
        prop_assert_eq!(without_money(carried.read_models()), without_money(first.read_models()));
        for e in &events[cut..] {
            carried.apply(e).unwrap();
        }
        prop_assert_eq!(without_money(carried.read_models()), without_money(whole.read_models()));
        for tenant in ["t0", "t1", "t2"] {
            prop_assert_eq!(carried.tenant_pricing(tenant), whole.tenant_pricing(tenant));
        }
    }
}

#[test]
fn a_ledger_whose_indexes_name_missing_objects_is_not_consistent() {
    let empty = || {
        json!({"livemode": false, "subscriptions": {}, "sessions": {}, "customers": {},
               "subscriptions_by_customer": {}, "sessions_by_customer": {},
               "sessions_by_subscription": {}})
    };
    let ledger: Ledger = serde_json::from_value(empty()).unwrap();
    assert!(ledger.is_consistent());
    for index in [
        "subscriptions_by_customer",
        "sessions_by_customer",
        "sessions_by_subscription",
    ] {
        let mut forged = empty();
        forged[index] = json!({"x": ["missing"]});
        let ledger: Ledger = serde_json::from_value(forged).unwrap();
        assert!(!ledger.is_consistent(), "{index}");
    }
}

/// The read models with the money side emptied: a carried ledger holds the subscription side.
fn without_money(mut models: crate::ledger::ReadModels) -> crate::ledger::ReadModels {
    models.money = Default::default();
    models
}

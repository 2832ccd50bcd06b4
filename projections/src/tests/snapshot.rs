//! A ledger written as a snapshot between batches and read back renders exactly what the
//! original would have: the projector's failover rests on this.

use super::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_snapshot_read_back_renders_the_same_changes_as_the_ledger_that_wrote_it(
        (events, cut, batches) in histories().prop_flat_map(|events| {
            let n = events.len();
            (Just(events).prop_shuffle(), 0..=n, proptest::collection::vec(0..n, 0..4))
        })
    ) {
        let mut original = Ledger::new(false);
        let mut rows = ReadModels::default();
        for (i, e) in events[..cut].iter().enumerate() {
            original.apply(e).unwrap();
            if batches.contains(&i) {
                rows.apply(original.take_changes());
            }
        }
        rows.apply(original.take_changes());
        let mut resumed = Ledger::from_snapshot(&original.to_snapshot()).unwrap();
        prop_assert_eq!(resumed.read_models(), original.read_models());
        let mut resumed_rows = rows;
        for (i, e) in events[cut..].iter().enumerate() {
            original.apply(e).unwrap();
            resumed.apply(e).unwrap();
            if batches.contains(&i) {
                let changes = original.take_changes();
                prop_assert_eq!(&resumed.take_changes(), &changes);
                resumed_rows.apply(changes);
            }
        }
        let changes = original.take_changes();
        prop_assert_eq!(&resumed.take_changes(), &changes);
        resumed_rows.apply(changes);
        prop_assert_eq!(&resumed_rows, &original.read_models());
    }
}

#[test]
fn money_and_rendering_state_are_carried() {
    let events = [
        checkout("evt_c", T, "cs_1", "t1", "cus_1", "sub_1"),
        invoice(
            "evt_i",
            "invoice.paid",
            T + 5,
            "sub_1",
            "cus_1",
            "subscription_create",
            true,
        ),
    ];
    let mut ledger = Ledger::new(false);
    for e in &events {
        ledger.apply(e).unwrap();
    }
    let changes = ledger.take_changes();
    assert_eq!(
        changes.money.invoices.len(),
        1,
        "the invoice is a money row"
    );
    let resumed = Ledger::from_snapshot(&ledger.to_snapshot()).unwrap();
    assert_eq!(resumed.read_models(), ledger.read_models());
    // Nothing left to render: the bookkeeping came along, so nothing is written twice.
    let mut resumed = resumed;
    assert!(resumed.take_changes().is_empty());
}

#[test]
fn unreadable_and_inconsistent_snapshots_are_refused() {
    let mut ledger = Ledger::new(false);
    ledger
        .apply(&checkout("evt_c", T, "cs_1", "t1", "cus_1", "sub_1"))
        .unwrap();
    ledger.take_changes();
    let bytes = ledger.to_snapshot();
    for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            matches!(
                Ledger::from_snapshot(&bytes[..cut]),
                Err(crate::SnapshotError::Unreadable(_))
            ),
            "cut at {cut}"
        );
    }
    // Bytes after the last section, or a section's length past the end, are refused.
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        Ledger::from_snapshot(&trailing),
        Err(crate::SnapshotError::Unreadable(_))
    ));
    let mut overlong = bytes.clone();
    overlong[..8].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
    assert!(matches!(
        Ledger::from_snapshot(&overlong),
        Err(crate::SnapshotError::Unreadable(_))
    ));
    // A huge length where a string's length belongs is refused, not allocated.
    assert!(
        Ledger::from_snapshot(&[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err()
    );
    let mut forged = serde_json::to_value(&ledger).unwrap();
    forged["sessions_by_customer"]["cus_1"] = json!(["cs_missing"]);
    let forged: Ledger = serde_json::from_value(forged).unwrap();
    assert!(matches!(
        Ledger::from_snapshot(&forged.to_snapshot()),
        Err(crate::SnapshotError::Inconsistent)
    ));
}

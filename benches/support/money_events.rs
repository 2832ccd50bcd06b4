//! The money events of the benchmark's 1,000,000-event log (see `big_log` in `ledger.rs`).

/// An odd step's money event, in the proportions of a monthly billing cycle: the invoice
/// finalized, then paid (or failed, one in thirteen), the charge and the PaymentIntent; a few
/// tenants also get a refund (one in forty), a credit note (one in a hundred) or a dispute
/// (one in two hundred). About half the log is money.
pub fn money_event(tenant: usize, s: usize, created: i64, pad: &str) -> (&'static str, String) {
    let (cus, sub) = (format!("cus_{tenant}"), format!("sub_{tenant}"));
    let cycle = s / 8;
    let (invoice, charge) = (
        format!("in_{tenant}_{cycle}"),
        format!("ch_{tenant}_{cycle}"),
    );
    let failed = (tenant + cycle) % 13 == 1;
    match s % 8 {
        1 if s == 9 && tenant % 40 == 0 => (
            "charge.refunded",
            format!(
                r#"{{"id":"ch_{tenant}_0","object":"charge","amount":4900,"amount_captured":4900,"amount_refunded":1000,"currency":"usd","customer":"{cus}","status":"succeeded","created":{created},"refunds":{{"object":"list","data":[{{"id":"re_{tenant}","object":"refund","amount":1000,"currency":"usd","charge":"ch_{tenant}_0","status":"succeeded","created":{created}}}]}},"description":"{pad}"}}"#
            ),
        ),
        1 | 3 => {
            let (kind, status) = match (s % 8, failed) {
                (1, _) => ("invoice.finalized", "open"),
                (_, true) => ("invoice.payment_failed", "open"),
                _ => ("invoice.paid", "paid"),
            };
            let paid = if status == "paid" { 4900 } else { 0 };
            (
                kind,
                format!(
                    r#"{{"id":"{invoice}","object":"invoice","customer":"{cus}","subscription":"{sub}","billing_reason":"subscription_cycle","paid":{is_paid},"status":"{status}","currency":"usd","amount_due":4900,"amount_paid":{paid},"amount_remaining":{remaining},"subtotal":4500,"total":4900,"total_tax_amounts":[{{"amount":400}}],"created":{created},"charge":"{charge}","attempt_count":1,"status_transitions":{{"finalized_at":{created},"paid_at":{paid_at}}},"description":"{pad}"}}"#,
                    is_paid = status == "paid",
                    remaining = 4900 - paid,
                    paid_at = if status == "paid" {
                        created.to_string()
                    } else {
                        "null".into()
                    },
                ),
            )
        }
        5 if s == 13 && tenant % 100 == 0 => (
            "credit_note.created",
            format!(
                r#"{{"id":"cn_{tenant}","object":"credit_note","amount":500,"currency":"usd","invoice":"{invoice}","customer":"{cus}","status":"issued","type":"post_payment","created":{created},"description":"{pad}"}}"#
            ),
        ),
        5 => (
            if failed {
                "charge.failed"
            } else {
                "charge.succeeded"
            },
            format!(
                r#"{{"id":"{charge}","object":"charge","amount":4900,"amount_captured":{captured},"amount_refunded":0,"currency":"usd","customer":"{cus}","invoice":"{invoice}","payment_intent":"pi_{tenant}_{cycle}","status":"{status}","created":{created},"description":"{pad}"}}"#,
                captured = if failed { 0 } else { 4900 },
                status = if failed { "failed" } else { "succeeded" },
            ),
        ),
        7 if s == 15 && tenant % 200 == 0 => (
            "charge.dispute.created",
            format!(
                r#"{{"id":"dp_{tenant}","object":"dispute","amount":4900,"currency":"usd","charge":"ch_{tenant}_0","status":"needs_response","reason":"fraudulent","created":{created},"description":"{pad}"}}"#
            ),
        ),
        _ => (
            if failed {
                "payment_intent.payment_failed"
            } else {
                "payment_intent.succeeded"
            },
            format!(
                r#"{{"id":"pi_{tenant}_{cycle}","object":"payment_intent","amount":4900,"amount_received":{received},"currency":"usd","customer":"{cus}","invoice":"{invoice}","status":"{status}","created":{created},"description":"{pad}"}}"#,
                received = if failed { 0 } else { 4900 },
                status = if failed {
                    "requires_payment_method"
                } else {
                    "succeeded"
                },
            ),
        ),
    }
}

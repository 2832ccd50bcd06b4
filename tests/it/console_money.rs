//! The console's money pages against a seeded ledger: the tenant page's money sections, the
//! tenants list's MRR and balance, revenue (chart, table, drill-down, CSV), invoices with
//! their aging, and payments. Amounts in three currencies with three exponents (`$49.00`,
//! `¥4,900`, `KWD 1.250`), roles, bad input, and a hostile invoice number.

use crate::console::{page, sign_in, HOSTILE, T};
use crate::events::{checkout_completed, envelope};
use crate::support::{now, TestApp, ADMIN_TOKEN, FINANCE_TOKEN};
use serde_json::{json, Value};

const DAY: i64 = 86_400;

/// A priced monthly subscription of one seat, active from `created`.
fn priced(id: &str, created: i64, sub: &str, customer: &str, currency: &str, unit: i64) -> Value {
    envelope(
        id,
        "customer.subscription.created",
        created,
        json!({"id": sub, "object": "subscription", "customer": customer, "status": "active",
               "created": created, "current_period_end": created + 30 * DAY,
               "current_period_start": created, "cancel_at_period_end": false,
               "items": {"data": [{"id": format!("si_{sub}"), "quantity": 1, "price": {
                   "id": format!("price_{currency}"), "object": "price", "unit_amount": unit,
                   "currency": currency, "recurring": {"interval": "month", "interval_count": 1}}}]},
               "metadata": {}}),
    )
}

/// An invoice of `amount` finalized at `created`: open (nothing paid) or paid.
#[allow(clippy::too_many_arguments)]
fn invoice(
    id: &str,
    created: i64,
    invoice: &str,
    customer: &str,
    currency: &str,
    amount: i64,
    paid: bool,
    due_date: Option<i64>,
    number: &str,
) -> Value {
    envelope(
        id,
        if paid {
            "invoice.paid"
        } else {
            "invoice.finalized"
        },
        created,
        json!({"id": invoice, "object": "invoice", "number": number, "customer": customer,
               "status": if paid { "paid" } else { "open" }, "paid": paid, "currency": currency,
               "amount_due": amount, "amount_paid": if paid { amount } else { 0 },
               "amount_remaining": if paid { 0 } else { amount }, "subtotal": amount,
               "total": amount, "created": created, "due_date": due_date,
               "collection_method": if due_date.is_some() { "send_invoice" } else { "charge_automatically" },
               "billing_reason": "subscription_cycle",
               "status_transitions": {"finalized_at": created,
                                      "paid_at": if paid { json!(created) } else { json!(null) }}}),
    )
}

/// Three tenants with MRR from 2025-01: `tenant-usd` ($49.00 a month; open invoices of
/// $49.00 ten days old, numbered with markup, and $10.00 a hundred days old; a $49.00
/// charge), `tenant-jpy` (¥4,900; an open invoice of ¥4,900 due in five days) and
/// `tenant-kwd` (KWD 1.250; a paid invoice of KWD 1.250).
pub async fn seed_money(app: &TestApp) {
    let today = now();
    let mut events = Vec::new();
    for (n, (tenant, currency, unit)) in [
        ("tenant-usd", "usd", 4900),
        ("tenant-jpy", "jpy", 4900),
        ("tenant-kwd", "kwd", 1250),
    ]
    .into_iter()
    .enumerate()
    {
        let (customer, sub) = (format!("cus_{currency}"), format!("sub_{currency}"));
        let at = T + n as i64 * 60;
        events.push(checkout_completed(
            &format!("evt_m_checkout_{currency}"),
            at,
            &format!("cs_{currency}"),
            tenant,
            &customer,
            &sub,
        ));
        events.push(priced(
            &format!("evt_m_sub_{currency}"),
            at + 10,
            &sub,
            &customer,
            currency,
            unit,
        ));
    }
    events.extend([
        invoice(
            "evt_m_inv_u1",
            today - 10 * DAY,
            "in_u1",
            "cus_usd",
            "usd",
            4900,
            false,
            None,
            HOSTILE,
        ),
        invoice(
            "evt_m_inv_u2",
            today - 100 * DAY,
            "in_u2",
            "cus_usd",
            "usd",
            1000,
            false,
            None,
            "N-2",
        ),
        invoice(
            "evt_m_inv_j1",
            today - DAY,
            "in_j1",
            "cus_jpy",
            "jpy",
            4900,
            false,
            Some(today + 5 * DAY),
            "J-1",
        ),
        invoice(
            "evt_m_inv_k1",
            T + DAY,
            "in_k1",
            "cus_kwd",
            "kwd",
            1250,
            true,
            None,
            "K-1",
        ),
        envelope(
            "evt_m_charge_u1",
            "charge.succeeded",
            today - 9 * DAY,
            json!({"id": "ch_u1", "object": "charge", "amount": 4900, "amount_captured": 4900,
                   "amount_refunded": 0, "currency": "usd", "customer": "cus_usd",
                   "status": "succeeded", "created": today - 9 * DAY, "invoice": "in_u2"}),
        ),
    ]);
    for event in events {
        app.deliver(&event).await;
    }
    app.wait_projected().await;
}

/// How many times `needle` occurs in `html`.
fn count(html: &str, needle: &str) -> usize {
    html.matches(needle).count()
}

#[tokio::test]
async fn money_pages_need_a_session_and_show_their_sources() {
    let app = TestApp::start().await;
    seed_money(&app).await;
    for path in [
        "/console/revenue",
        "/console/revenue.csv",
        "/console/invoices",
        "/console/payments",
    ] {
        let (status, html) = page(&app, path, None).await;
        assert_eq!(status, 401, "{path}");
        assert!(!html.contains("tenant-usd"), "{path} shows no data");
    }
    let admin = sign_in(&app, ADMIN_TOKEN).await;
    let finance = sign_in(&app, FINANCE_TOKEN).await;
    for (cookie, operations) in [(&admin, true), (&finance, false)] {
        let (status, html) = page(&app, "/console/revenue", Some(cookie)).await;
        assert_eq!(status, 200);
        for nav in ["/console/revenue", "/console/invoices", "/console/payments"] {
            assert!(html.contains(&format!("<a href=\"{nav}\"")), "{nav}");
        }
        assert_eq!(html.contains("/console/operations"), operations);
    }
    let (_, invoices) = page(
        &app,
        "/console/invoices?status=open&currency=USD",
        Some(&finance),
    )
    .await;
    assert!(invoices.contains("href=\"/api/billing/invoices?status=open&amp;currency=usd\""));
    let (_, payments) = page(
        &app,
        "/console/payments?tenant_id=tenant-usd",
        Some(&finance),
    )
    .await;
    assert!(payments.contains("href=\"/api/billing/payments?tenant_id=tenant-usd\""));
    let (_, revenue) = page(
        &app,
        "/console/revenue?from=2024-12&to=2025-02",
        Some(&finance),
    )
    .await;
    assert!(revenue.contains("href=\"/api/billing/revenue?from=2024-12&amp;to=2025-02\""));
    assert!(revenue.contains("href=\"/console/revenue.csv?from=2024-12&amp;to=2025-02\""));
}

#[tokio::test]
async fn tenants_show_mrr_and_balance_per_currency_and_sort_by_them() {
    let app = TestApp::start().await;
    seed_money(&app).await;
    let cookie = sign_in(&app, FINANCE_TOKEN).await;
    let (status, tenants) = page(&app, "/console/tenants", Some(&cookie)).await;
    assert_eq!(status, 200);
    for amount in ["$49.00", "$59.00", "¥4,900", "KWD 1.250"] {
        assert!(
            tenants.contains(&format!("<span class=\"money\">{amount}</span>")),
            "{amount}"
        );
    }
    let (_, by_jpy) = page(
        &app,
        "/console/tenants?sort=mrr&dir=desc&currency=JPY",
        Some(&cookie),
    )
    .await;
    let first = by_jpy.find("/console/tenants/tenant-").unwrap();
    assert!(
        by_jpy[first..].starts_with("/console/tenants/tenant-jpy"),
        "JPY's tenant first"
    );
    assert!(by_jpy.contains("aria-sort=\"descending\""));
    let (_, by_balance) = page(
        &app,
        "/console/tenants?sort=balance&currency=usd",
        Some(&cookie),
    )
    .await;
    let first = by_balance.find("/console/tenants/tenant-").unwrap();
    assert!(by_balance[first..].starts_with("/console/tenants/tenant-usd"));
}

#[tokio::test]
async fn a_tenant_page_shows_its_money_and_balance_as_of() {
    let app = TestApp::start().await;
    seed_money(&app).await;
    let cookie = sign_in(&app, FINANCE_TOKEN).await;
    let (status, usd) = page(&app, "/console/tenants/tenant-usd", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(usd.contains("Balance per currency") && usd.contains("<th scope=\"row\">USD</th>"));
    assert!(
        usd.contains("<span class=\"money\">$59.00</span>"),
        "outstanding"
    );
    assert!(usd.contains("href=\"/api/billing/invoices/in_u1\""));
    assert!(usd.contains("href=\"/console/events/evt_m_inv_u1\""));
    assert!(
        usd.contains("<code>ch_u1</code>")
            && usd.contains("href=\"/console/events/evt_m_charge_u1\"")
    );
    assert!(usd.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(
        !usd.contains("<script>alert"),
        "the invoice number is escaped"
    );
    assert!(usd.contains("href=\"/api/billing/tenants/tenant-usd/balance\""));
    assert!(usd.contains("Entitlements (now)"));

    let (_, kwd) = page(&app, "/console/tenants/tenant-kwd", Some(&cookie)).await;
    assert!(kwd.contains("<span class=\"money\">KWD 1.250</span>"));
    assert!(
        kwd.contains("<span class=\"money\">KWD 0.000</span>"),
        "nothing outstanding"
    );
    let (_, before) = page(
        &app,
        "/console/tenants/tenant-kwd?as_of=2025-01-01T12%3A00%3A00Z",
        Some(&cookie),
    )
    .await;
    assert!(before.contains("Balance per currency as of 2025-01-01 12:00:00 UTC"));
    assert!(
        before.contains("No money in any currency."),
        "the invoice came a day later"
    );
    assert!(before.contains("balance?as_of=2025-01-01T12%3A00%3A00Z"));
}

#[tokio::test]
async fn revenue_charts_each_currency_month_by_month_with_a_drill_down_and_csv() {
    let app = TestApp::start().await;
    seed_money(&app).await;
    let cookie = sign_in(&app, FINANCE_TOKEN).await;
    let (status, all) = page(
        &app,
        "/console/revenue?from=2024-12&to=2025-02",
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        count(&all, "<svg class=\"revenue-chart\""),
        3,
        "a chart per currency"
    );
    assert_eq!(
        count(&all, "<g class=\"month\" data-month="),
        9,
        "three months each"
    );
    for heading in ["MRR in JPY", "MRR in KWD", "MRR in USD"] {
        assert!(all.contains(heading), "{heading}");
    }
    for label in [
        "New",
        "Reactivation",
        "Expansion",
        "Contraction",
        "Churn",
        "Closing MRR (line)",
    ] {
        assert!(all.contains(label), "legend {label}");
    }
    assert!(
        all.contains("<title>2025-01 New: +$49.00</title>"),
        "bars say what they are"
    );
    assert!(all.contains("<span class=\"money\">¥4,900</span>"));
    assert!(all.contains("<span class=\"money\">KWD 1.250</span>"));

    let (_, usd) = page(
        &app,
        "/console/revenue?from=2024-12&to=2025-02&currency=USD&month=2025-01",
        Some(&cookie),
    )
    .await;
    assert_eq!(count(&usd, "<svg class=\"revenue-chart\""), 1);
    assert_eq!(count(&usd, "data-month="), 3);
    assert!(usd.contains("Movements in 2025-01"));
    assert!(usd.contains("href=\"/console/tenants/tenant-usd\""));
    assert!(usd.contains("href=\"/console/events/evt_m_sub_usd\""));
    assert!(
        !usd.contains("href=\"/console/tenants/tenant-jpy\""),
        "one currency's movements"
    );
    assert!(usd.contains("href=\"/api/billing/revenue/movements?month=2025-01&amp;currency=usd\""));

    let (_, one) = page(
        &app,
        "/console/revenue?from=2025-01&to=2025-01&tenant_id=tenant-kwd",
        Some(&cookie),
    )
    .await;
    assert_eq!(count(&one, "data-month="), 1);
    assert!(one.contains("MRR in KWD") && !one.contains("MRR in USD"));

    let csv = app
        .http
        .get(app.url("/console/revenue.csv?from=2024-12&to=2025-02&currency=usd"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.trim_end().split("\r\n").collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[2], "2025-01,usd,0,4900,0,0,0,0,4900,1");

    for bad in [
        "/console/revenue?from=2025-13",
        "/console/revenue?from=2025-03&to=2025-01",
        "/console/revenue?from=2000-01&to=2025-01",
        "/console/invoices?from=yesterday",
        "/console/payments?cursor=not-a-cursor",
    ] {
        let (status, html) = page(&app, bad, Some(&cookie)).await;
        assert_eq!(status, 400, "{bad}");
        assert!(html.contains("role=\"alert\""), "{bad}");
    }
}

#[tokio::test]
async fn invoices_filter_page_and_age_per_currency() {
    let app = TestApp::start().await;
    seed_money(&app).await;
    let cookie = sign_in(&app, FINANCE_TOKEN).await;
    let (status, all) = page(&app, "/console/invoices", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert_eq!(count(&all, "href=\"/api/billing/invoices/in_"), 4);
    assert!(
        all.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !all.contains("<script>alert")
    );
    // USD: $49.00 ten days past due, $10.00 a hundred; JPY: due in five days, by its due_date.
    for cell in [
        "data-bucket=\"0-30\"><span class=\"money\">$49.00</span>",
        "data-bucket=\"over-90\"><span class=\"money\">$10.00</span>",
        "data-bucket=\"total\"><span class=\"money\">$59.00</span>",
        "data-bucket=\"not-due\"><span class=\"money\">¥4,900</span>",
        "data-bucket=\"0-30\"><span class=\"money\">¥0</span>",
    ] {
        assert!(all.contains(cell), "{cell}");
    }
    assert!(all.contains("<small>1 by due date</small>"));
    assert!(
        !all.contains("KWD 0.000</span><br><small>0 invoices"),
        "no open KWD invoice, no KWD row"
    );

    let (_, open_usd) = page(
        &app,
        "/console/invoices?status=open&currency=usd&from=2020-01-01",
        Some(&cookie),
    )
    .await;
    assert_eq!(count(&open_usd, "href=\"/api/billing/invoices/in_"), 2);
    assert!(
        !open_usd.contains("¥"),
        "the aging follows the currency filter"
    );
    let (_, paid) = page(
        &app,
        "/console/invoices?status=paid&tenant_id=tenant-kwd",
        Some(&cookie),
    )
    .await;
    assert_eq!(count(&paid, "href=\"/api/billing/invoices/in_"), 1);
    assert!(paid.contains("<span class=\"status good\">paid</span>"));
    assert!(paid.contains("<span class=\"money\">KWD 1.250</span>"));
    assert!(!paid.contains("Next page"), "one page");

    let (status, payments) = page(&app, "/console/payments?currency=usd", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(payments.contains("<code>ch_u1</code>"));
    assert!(payments.contains("<span class=\"money\">$49.00</span>"));
    assert!(payments.contains("href=\"/console/tenants/tenant-usd\""));
    let (_, none) = page(&app, "/console/payments?currency=jpy", Some(&cookie)).await;
    assert!(!none.contains("ch_u1") && none.contains("None."));
}

#[tokio::test]
async fn invoices_page_through_the_api_cursor() {
    let app = TestApp::start().await;
    app.deliver(&checkout_completed(
        "evt_p0", T, "cs_p", "tenant-p", "cus_p", "sub_p",
    ))
    .await;
    let rows = billing_ledger::console::lists::LIST_PAGE_ROWS + 1;
    let events: Vec<Value> = (0..rows)
        .map(|i| {
            let (id, number) = (format!("in_p{i:03}"), format!("P-{i:03}"));
            invoice(
                &format!("evt_p{i:03}"),
                T + i * 60,
                &id,
                "cus_p",
                "eur",
                100,
                true,
                None,
                &number,
            )
        })
        .collect();
    // At once: the order of arrival does not matter, each invoice has its own `created`.
    futures_util::future::join_all(events.iter().map(|event| app.deliver(event))).await;
    app.wait_projected().await;
    let cookie = sign_in(&app, FINANCE_TOKEN).await;
    let (status, first) = page(&app, "/console/invoices?tenant_id=tenant-p", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert_eq!(
        count(&first, "href=\"/api/billing/invoices/in_p"),
        rows as usize - 1
    );
    assert!(first.contains("in_p000") && !first.contains("in_p100"));
    let marker = "rel=\"next\" href=\"";
    let start = first.find(marker).expect("a next page") + marker.len();
    let next = first[start..start + first[start..].find('"').unwrap()].replace("&amp;", "&");
    let (status, second) = page(&app, &next, Some(&cookie)).await;
    assert_eq!(status, 200);
    assert_eq!(count(&second, "href=\"/api/billing/invoices/in_p"), 1);
    assert!(second.contains("in_p100") && second.contains(">First page</a>"));
    assert!(!second.contains("rel=\"next\""), "the last page");
}

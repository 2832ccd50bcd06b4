//! The console's pages in `cargo bench --bench ledger -- query`: a session for the benchmark's
//! token, the pages measured beside the API routes (issue 15: p99 under 100 ms at 1,000,000
//! events), and the first revenue page, which folds the whole log (later ones reuse that fold
//! until the log moves).

use super::TOKEN;
use std::time::Instant;

/// Issue 15's target for a console page, p99 in milliseconds.
pub const CONSOLE_PAGE_TARGET_MS: f64 = 100.0;

/// A route of the read benchmark: its name and its path for request `i`.
pub type Route = (&'static str, Box<dyn Fn(usize) -> String>);

/// A console session for the benchmark's token: the `Cookie` header value.
pub async fn session(base: &str) -> String {
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{base}/console/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .unwrap();
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

/// The first revenue page of every tenant (24 months): it folds the whole log. Prints its time.
pub async fn first_revenue_page(http: &reqwest::Client, base: &str) {
    let cookie = session(base).await;
    let started = Instant::now();
    let page = http
        .get(format!("{base}/console/revenue?from=2020-09&to=2022-08"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert!(page.status().is_success(), "{}", page.status());
    let html = page.text().await.unwrap();
    println!(
        "query: console revenue page, first request (folds the log; {} month groups): {:.0} ms",
        html.matches("<g class=\"month\"").count(),
        started.elapsed().as_secs_f64() * 1e3
    );
}

/// The console pages measured, for `tenants` tenants.
pub fn routes(tenants: usize) -> Vec<Route> {
    let tenant = move |i: usize| i * 7919 % tenants;
    vec![
        (
            "console tenant page (HTML)",
            Box::new(move |i| format!("/console/tenants/tenant-{}", tenant(i))),
        ),
        (
            "console revenue page, every tenant, 24 months",
            Box::new(|_| "/console/revenue?from=2020-09&to=2022-08".to_owned()),
        ),
        (
            "console revenue page, one tenant, 24 months",
            Box::new(move |i| {
                format!(
                    "/console/revenue?from=2020-09&to=2022-08&tenant_id=tenant-{}",
                    tenant(i)
                )
            }),
        ),
        (
            "console invoices page of a tenant, with aging",
            Box::new(move |i| format!("/console/invoices?tenant_id=tenant-{}", tenant(i))),
        ),
        (
            "console payments page of a tenant",
            Box::new(move |i| format!("/console/payments?tenant_id=tenant-{}", tenant(i))),
        ),
    ]
}

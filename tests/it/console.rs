//! The console's pages against a seeded ledger: sign-in and sessions, roles, CSRF refusal,
//! time travel, and escaping of hostile strings that arrive inside events.

use crate::events::{checkout_completed, envelope, subscription};
use crate::support::{TestApp, ADMIN_TOKEN, FINANCE_TOKEN};
use serde_json::json;

/// 2025-01-01T10:00:00Z.
pub const T: i64 = 1_735_725_600;
pub const HOSTILE: &str = "<script>alert(1)</script>";
pub const HOSTILE_TENANT: &str = "t\"><script>alert(2)</script>";

/// A ledger with one tenant (`tenant-one`: a customer with a hostile name, a Checkout Session
/// of €49.00, a subscription active then past due), a tenant whose ID is hostile, and an
/// unknown event whose body carries markup.
pub async fn seed(app: &TestApp) {
    app.deliver(&envelope(
        "evt_c_customer",
        "customer.created",
        T - 100,
        json!({"id": "cus_c1", "object": "customer", "email": "ada@example.com",
               "name": HOSTILE, "metadata": {"tenant_id": "tenant-one"}}),
    ))
    .await;
    app.deliver(&checkout_completed(
        "evt_c_checkout",
        T,
        "cs_c1",
        "tenant-one",
        "cus_c1",
        "sub_c1",
    ))
    .await;
    let period_end = T + 30 * 86_400;
    for (id, kind, created, status) in [
        (
            "evt_c_sub_created",
            "customer.subscription.created",
            T + 10,
            "active",
        ),
        (
            "evt_c_sub_updated",
            "customer.subscription.updated",
            T + 86_400,
            "past_due",
        ),
    ] {
        app.deliver(&subscription(
            id, kind, created, "sub_c1", "cus_c1", status, period_end,
        ))
        .await;
    }
    app.deliver(&checkout_completed(
        "evt_c_hostile",
        T,
        "cs_h1",
        HOSTILE_TENANT,
        "cus_h1",
        "sub_h1",
    ))
    .await;
    app.deliver(&envelope(
        "evt_c_unknown",
        "thing.happened",
        T,
        json!({"id": "thing_1", "object": "thing", "description": HOSTILE}),
    ))
    .await;
    app.wait_projected().await;
}

/// A client that does not follow redirects (the sign-in answers 303).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Posts a form; `fields` are already URL-encoded.
pub async fn post_form(
    app: &TestApp,
    path: &str,
    cookie: Option<&str>,
    fields: &str,
) -> reqwest::Response {
    let mut request = client()
        .post(app.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(fields.to_owned());
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

/// Signs in with `token` and returns the `Cookie` header value of the session.
pub async fn sign_in(app: &TestApp, token: &str) -> String {
    let response = post_form(app, "/console/sign-in", None, &format!("token={token}")).await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/console");
    let set_cookie = response.headers()["set-cookie"].to_str().unwrap();
    set_cookie.split(';').next().unwrap().to_owned()
}

/// GETs a console page: its status and HTML.
pub async fn page(app: &TestApp, path: &str, cookie: Option<&str>) -> (u16, String) {
    let mut request = client().get(app.url(path));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    if status != 303 {
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/html"),
            "{path}: {content_type}"
        );
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap();
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
    }
    (status, response.text().await.unwrap())
}

/// The CSRF token in a page's forms.
pub fn csrf(html: &str) -> String {
    let start = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[start..start + 64].to_owned()
}

#[tokio::test]
async fn signed_out_visitors_get_the_sign_in_form_and_nothing_else() {
    let app = TestApp::start().await;
    seed(&app).await;
    let (status, home) = page(&app, "/console", None).await;
    assert_eq!(status, 200);
    assert!(home.contains("name=\"token\"") && home.contains("action=\"/console/sign-in\""));
    for path in [
        "/console/tenants",
        "/console/tenants/tenant-one",
        "/console/events/evt_c_checkout",
        "/console/integrity",
        "/console/operations",
    ] {
        let (status, html) = page(&app, path, None).await;
        assert_eq!(status, 401, "{path}");
        assert!(
            html.contains("name=\"token\""),
            "{path} shows the sign-in form"
        );
        assert!(!html.contains("tenant-one"), "{path} shows no data");
        let forged = "ledger_console=99999999999.00.00";
        assert_eq!(page(&app, path, Some(forged)).await.0, 401, "{path} forged");
    }
    let wrong = post_form(&app, "/console/sign-in", None, "token=not-a-token").await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    let cross_site = client()
        .post(app.url("/console/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "https://evil.example")
        .body(format!("token={FINANCE_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);
    assert!(cross_site.headers().get("set-cookie").is_none());
    let sign_in_with = |headers: [(&'static str, &'static str); 2]| {
        let mut request = client()
            .post(app.url("/console/sign-in"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={FINANCE_TOKEN}"));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let fetched_cross_site = [("sec-fetch-site", "cross-site"), ("x-unused", "")];
    assert_eq!(sign_in_with(fetched_cross_site).await, 403);
    let behind_a_proxy = [
        ("origin", "https://ledger.example.com"),
        ("x-forwarded-host", "ledger.example.com"),
    ];
    assert_eq!(sign_in_with(behind_a_proxy).await, 303);
}

#[tokio::test]
async fn a_session_cookie_is_http_only_strict_secure_over_tls_and_ends_at_sign_out() {
    let app = TestApp::start().await;
    let response = post_form(
        &app,
        "/console/sign-in",
        None,
        &format!("token={FINANCE_TOKEN}"),
    )
    .await;
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=28800",
    ] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure") && !set_cookie.contains(FINANCE_TOKEN));
    let over_tls = client()
        .post(app.url("/console/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-forwarded-proto", "https")
        .body(format!("token={FINANCE_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert!(over_tls.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("; Secure"));

    let cookie = sign_in(&app, FINANCE_TOKEN).await;
    let (status, home) = page(&app, "/console", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(home.contains("Signed in: finance") && !home.contains("/console/operations"));
    // Change the last character (to one it is not), so the cookie's MAC no longer matches.
    let last = if cookie.ends_with('0') { '1' } else { '0' };
    let tampered = format!("{}{last}", &cookie[..cookie.len() - 1]);
    assert_eq!(page(&app, "/console/tenants", Some(&tampered)).await.0, 401);

    let refused = post_form(&app, "/console/sign-out", Some(&cookie), "csrf=0000").await;
    assert_eq!(refused.status(), 403);
    let token = csrf(&home);
    let out = post_form(
        &app,
        "/console/sign-out",
        Some(&cookie),
        &format!("csrf={token}"),
    )
    .await;
    assert_eq!(out.status(), 200);
    assert!(out.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert!(out.text().await.unwrap().contains("You are signed out."));
}

#[tokio::test]
async fn finance_reads_tenants_and_travels_in_time() {
    let app = TestApp::start().await;
    seed(&app).await;
    let cookie = sign_in(&app, FINANCE_TOKEN).await;
    let get = |path: &'static str| page(&app, path, Some(&cookie));

    let (status, tenants) = get("/console/tenants").await;
    assert_eq!(status, 200);
    assert!(tenants.contains("href=\"/console/tenants/tenant-one\""));
    assert!(tenants.contains("<span class=\"status warn\">past_due</span>"));
    assert!(tenants.contains("sort=mrr") && tenants.contains("sort=balance"));
    let (_, active_only) = get("/console/tenants?status=active").await;
    assert!(!active_only.contains("/console/tenants/tenant-one"));
    let (_, searched) = get("/console/tenants?q=ONE&sort=updated&dir=desc").await;
    assert!(searched.contains("/console/tenants/tenant-one"));
    assert!(searched.contains("aria-sort=\"descending\""));
    assert!(
        !searched.contains("alert(2)"),
        "the search left the hostile tenant out"
    );

    let (status, tenant) = get("/console/tenants/tenant-one").await;
    assert_eq!(status, 200);
    assert!(tenant.contains("Current state") && tenant.contains(">past_due</span>"));
    assert!(tenant.contains("€49.00"), "money formatted");
    assert!(tenant.contains("ada@example.com"));
    assert!(tenant.contains("href=\"/console/events/evt_c_sub_updated\""));
    assert!(tenant.contains("<code>status</code>: <span class=\"old\">active</span> → past_due"));
    assert!(tenant.contains("href=\"/api/billing/tenants/tenant-one/history?limit=1000\""));
    assert!(tenant.contains("<time datetime=\"2025-01-02T10:00:00Z\""));

    let (status, past) = get("/console/tenants/tenant-one?as_of=2025-01-01T12%3A00%3A00Z").await;
    assert_eq!(status, 200);
    assert!(past.contains("State as of 2025-01-01 12:00:00 UTC"));
    assert!(past.contains("<span class=\"status good\">active</span>"));
    assert!(
        !past.contains("evt_c_sub_updated"),
        "the timeline stops at the instant"
    );
    assert!(
        past.contains("pricing?as_of=2025-01-01T10%3A00%3A00Z")
            || past.contains("pricing?as_of=2025-01-01T12%3A00%3A00Z")
    );
    let (status, typed) =
        get("/console/tenants/tenant-one?as_of=2025-01-01T12%3A00&as_of_position=").await;
    assert_eq!(status, 200, "a browser's date-time field is read as UTC");
    assert!(typed.contains(">active</span>"));
    let (status, by_position) = get("/console/tenants/tenant-one?as_of_position=1").await;
    assert_eq!(status, 200);
    assert!(by_position.contains("No subscription known"));
    assert_eq!(
        get("/console/tenants/tenant-one?as_of=yesterday").await.0,
        400
    );
    assert_eq!(
        get("/console/tenants/tenant-one?as_of=2025-01-01T00%3A00&as_of_position=3")
            .await
            .0,
        400
    );
    assert_eq!(get("/console/tenants/nobody").await.0, 404);
}

#[tokio::test]
async fn finance_reads_events_and_integrity_but_may_not_operate() {
    let app = TestApp::start().await;
    seed(&app).await;
    let cookie = sign_in(&app, FINANCE_TOKEN).await;
    let get = |path: &'static str| page(&app, path, Some(&cookie));
    let (status, event) = get("/console/events/evt_c_checkout").await;
    assert_eq!(status, 200);
    assert!(event.contains("checkout.session.completed"));
    assert!(event.contains("secret 1 of <code>STRIPE_WEBHOOK_SECRET</code>"));
    assert!(event.contains("href=\"/console/tenants/tenant-one\""));
    assert!(event.contains("checkout_client_reference_id"));
    assert!(
        event.contains("\n  &quot;id&quot;: &quot;evt_c_checkout&quot;,\n"),
        "indented"
    );
    assert!(
        event.contains("{&quot;api_version&quot;:&quot;2024-06-20&quot;,&quot;created&quot;:"),
        "raw"
    );
    assert!(event.contains("href=\"/api/billing/events/evt_c_checkout\""));
    assert_eq!(get("/console/events/evt_nowhere").await.0, 404);

    let (status, integrity) = get("/console/integrity").await;
    assert_eq!(status, 200);
    assert!(integrity.contains("<dd>6</dd>") && integrity.contains("not been verified yet"));
    assert!(!integrity.contains("Verify now"));
    let (status, refused) = get("/console/operations").await;
    assert_eq!(status, 403);
    assert!(refused.contains("admin"));
    let verify = post_form(
        &app,
        "/console/integrity/verify",
        Some(&cookie),
        &format!("csrf={}", csrf(&integrity)),
    )
    .await;
    assert_eq!(
        verify.status(),
        403,
        "finance may not verify, even with its CSRF token"
    );
}

#[tokio::test]
async fn admin_forms_refuse_a_missing_or_foreign_csrf_token() {
    let app = TestApp::start().await;
    seed(&app).await;
    let cookie = sign_in(&app, ADMIN_TOKEN).await;
    let other_session = sign_in(&app, ADMIN_TOKEN).await;
    let (status, operations) = page(&app, "/console/operations", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(operations.contains("<span class=\"status good\">live</span>"));
    assert!(
        operations.contains("href=\"/console/events/evt_c_unknown\"")
            || operations.contains("None.")
    );
    let (_, foreign_page) = page(&app, "/console/operations", Some(&other_session)).await;
    for fields in [
        "".to_owned(),
        "csrf=".to_owned(),
        format!("csrf={}", csrf(&foreign_page)),
    ] {
        let refused = post_form(&app, "/console/operations/rebuild", Some(&cookie), &fields).await;
        assert_eq!(refused.status(), 403, "{fields}");
        let refused = post_form(&app, "/console/integrity/verify", Some(&cookie), &fields).await;
        assert_eq!(refused.status(), 403, "{fields}");
    }
    assert_eq!(app.db.count("SELECT count(*) FROM rebuilds").await, 0);
    assert_eq!(app.db.count("SELECT count(*) FROM verifications").await, 0);

    let token = format!("csrf={}", csrf(&operations));
    let queued = post_form(&app, "/console/operations/rebuild", Some(&cookie), &token).await;
    assert_eq!(queued.status(), 303);
    assert_eq!(app.db.count("SELECT count(*) FROM rebuilds").await, 1);
    let verified = post_form(&app, "/console/integrity/verify", Some(&cookie), &token).await;
    assert_eq!(verified.status(), 303);
    assert_eq!(verified.headers()["location"], "/console/integrity");
    let (_, integrity) = page(&app, "/console/integrity", Some(&cookie)).await;
    assert!(integrity.contains("<span class=\"status good\">intact</span>"));
    assert!(integrity.contains("run by console"));
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM verifications WHERE ran_by = 'console' AND intact")
            .await,
        1
    );
    let api = app.get("/api/billing/admin/verify", ADMIN_TOKEN).await;
    assert_eq!(api.status(), 200);
    let (_, integrity) = page(&app, "/console/integrity", Some(&cookie)).await;
    assert!(
        integrity.contains("run by api"),
        "the API's verification is the last one now"
    );
}

#[tokio::test]
async fn hostile_strings_from_events_are_escaped_on_every_page() {
    let app = TestApp::start().await;
    seed(&app).await;
    let cookie = sign_in(&app, ADMIN_TOKEN).await;
    let hostile_tenant_path = format!(
        "/console/tenants/{}",
        billing_ledger::console::layout::encode(HOSTILE_TENANT)
    );
    let mut seen = 0;
    for path in [
        "/console/tenants",
        "/console/tenants/tenant-one",
        hostile_tenant_path.as_str(),
        "/console/events/evt_c_customer",
        "/console/events/evt_c_unknown",
        "/console/events/evt_c_hostile",
    ] {
        let (status, html) = page(&app, path, Some(&cookie)).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            !html.contains("<script>alert"),
            "{path} carries live markup"
        );
        if html.contains("&lt;script&gt;alert(") {
            seen += 1;
        }
    }
    assert_eq!(seen, 6, "every page shows the hostile text, escaped");
}

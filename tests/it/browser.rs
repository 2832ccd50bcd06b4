//! The console in a real browser: Debian's `chromium` driven through `chromedriver` over
//! WebDriver (`fantoccini`, plain HTTP to the local driver: no TLS stack). Signs in, opens a
//! tenant, follows an event link, switches "as of", opens revenue and counts the chart's
//! months, signs out and is refused.
//!
//! On failure the page is saved as a PNG under `target/tmp/browser-failures/`. With
//! `LEDGER_CONSOLE_SCREENSHOT=<path>` set, the tenant page is also saved there (how README's
//! `docs/console.png` is made), and with `LEDGER_CONSOLE_REVENUE_SCREENSHOT=<path>` the
//! revenue page (`docs/console-revenue.png`).

use crate::console::{seed, HOSTILE};
use crate::console_money::seed_money;
use crate::support::{TestApp, FINANCE_TOKEN};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Longest wait for the driver to listen, and for an element to appear.
const BROWSER_WAIT: Duration = Duration::from_secs(30);

/// A `chromedriver` process of this test's own, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (apt-get install chromium chromium-driver)");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let started = std::time::Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < BROWSER_WAIT,
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        driver
    }

    async fn browser(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium_binary(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000"],
            }),
        );
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("chromedriver starts a chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium_binary() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .unwrap_or("chromium")
}

type Step = Result<(), String>;

fn fail(what: &str, error: impl std::fmt::Display) -> String {
    format!("{what}: {error}")
}

async fn click(browser: &Client, css: &str) -> Step {
    let element = browser
        .wait()
        .at_most(BROWSER_WAIT)
        .for_element(Locator::Css(css))
        .await
        .map_err(|e| fail(css, e))?;
    element.click().await.map_err(|e| fail(css, e))
}

async fn heading(browser: &Client) -> Result<String, String> {
    // Right after a click the old page's `h1` can still be found and then go stale as the new
    // page replaces it: find it again until its text reads.
    let deadline = std::time::Instant::now() + BROWSER_WAIT;
    loop {
        let h1 = browser
            .wait()
            .at_most(BROWSER_WAIT)
            .for_element(Locator::Css("h1"))
            .await
            .map_err(|e| fail("h1", e))?;
        match h1.text().await {
            Ok(text) => return Ok(text),
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => return Err(fail("h1 text", e)),
        }
    }
}

async fn expect_heading(browser: &Client, expected: &str) -> Step {
    let started = std::time::Instant::now();
    loop {
        let found = heading(browser).await?;
        if found == expected {
            return Ok(());
        }
        if started.elapsed() > BROWSER_WAIT {
            return Err(format!(
                "expected the heading {expected:?}, found {found:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn source_contains(browser: &Client, needle: &str) -> Step {
    let source = browser.source().await.map_err(|e| fail("source", e))?;
    if source.contains(needle) {
        Ok(())
    } else {
        Err(format!("the page does not contain {needle:?}"))
    }
}

async fn walk(app: &TestApp, browser: &Client) -> Step {
    browser
        .goto(&app.url("/console"))
        .await
        .map_err(|e| fail("goto", e))?;
    expect_heading(browser, "Sign in").await?;
    let token = browser
        .find(Locator::Css("input[name=token]"))
        .await
        .map_err(|e| fail("token field", e))?;
    token
        .send_keys(FINANCE_TOKEN)
        .await
        .map_err(|e| fail("typing", e))?;
    click(browser, "form[action='/console/sign-in'] button").await?;
    expect_heading(browser, "Console").await?;

    // Keyboard: the first Tab reaches the skip link.
    let body = browser
        .find(Locator::Css("body"))
        .await
        .map_err(|e| fail("body", e))?;
    body.send_keys("\u{e004}")
        .await
        .map_err(|e| fail("tab", e))?;
    let focused = browser
        .active_element()
        .await
        .map_err(|e| fail("focus", e))?;
    let focused_text = focused.text().await.map_err(|e| fail("focus text", e))?;
    if focused_text != "Skip to content" {
        return Err(format!("the first Tab focused {focused_text:?}"));
    }

    click(browser, "nav a[href='/console/tenants']").await?;
    expect_heading(browser, "Tenants").await?;
    click(browser, "td a[href='/console/tenants/tenant-one']").await?;
    expect_heading(browser, "Tenant tenant-one").await?;
    source_contains(browser, "&lt;script&gt;alert(1)&lt;/script&gt;").await?;
    if let Ok(path) = std::env::var("LEDGER_CONSOLE_SCREENSHOT") {
        let png = browser
            .screenshot()
            .await
            .map_err(|e| fail("screenshot", e))?;
        std::fs::write(&path, png).map_err(|e| fail(&path, e))?;
    }

    click(
        browser,
        "table.timeline a[href='/console/events/evt_c_sub_updated']",
    )
    .await?;
    expect_heading(browser, "Event evt_c_sub_updated").await?;
    source_contains(browser, "customer.subscription.updated").await?;
    browser.back().await.map_err(|e| fail("back", e))?;
    expect_heading(browser, "Tenant tenant-one").await?;

    let as_of = browser
        .find(Locator::Css("#as-of"))
        .await
        .map_err(|e| fail("as-of field", e))?;
    as_of
        .send_keys("2025-01-01T12:00:00Z")
        .await
        .map_err(|e| fail("typing as of", e))?;
    click(browser, "form.as-of button").await?;
    let started = std::time::Instant::now();
    while source_contains(browser, "State as of 2025-01-01 12:00:00 UTC")
        .await
        .is_err()
    {
        if started.elapsed() > BROWSER_WAIT {
            return Err("the as-of state never showed".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    source_contains(browser, "<span class=\"status good\">active</span>").await?;

    // Revenue: a chart per currency, a month group per month asked for.
    click(browser, "nav a[href='/console/revenue']").await?;
    browser
        .goto(&app.url("/console/revenue?from=2024-11&to=2025-02&currency=usd"))
        .await
        .map_err(|e| fail("goto revenue", e))?;
    expect_heading(browser, "Revenue, 2024-11 to 2025-02").await?;
    let charts = browser
        .find_all(Locator::Css("svg.revenue-chart"))
        .await
        .map_err(|e| fail("charts", e))?;
    let months = browser
        .find_all(Locator::Css("svg.revenue-chart g.month"))
        .await
        .map_err(|e| fail("months", e))?;
    if (charts.len(), months.len()) != (1, 4) {
        return Err(format!(
            "expected 1 chart of 4 months, found {} charts and {} months",
            charts.len(),
            months.len()
        ));
    }
    let segment = browser
        .find(Locator::Css("svg.revenue-chart rect.segment.new"))
        .await
        .map_err(|e| fail("a bar of new MRR", e))?;
    let height: f64 = segment
        .attr("height")
        .await
        .map_err(|e| fail("bar height", e))?
        .and_then(|h| h.parse().ok())
        .unwrap_or(0.0);
    if height <= 0.0 {
        return Err(format!("the bar of new MRR is {height} high"));
    }
    if let Ok(path) = std::env::var("LEDGER_CONSOLE_REVENUE_SCREENSHOT") {
        let png = browser
            .screenshot()
            .await
            .map_err(|e| fail("screenshot", e))?;
        std::fs::write(&path, png).map_err(|e| fail(&path, e))?;
    }

    click(browser, "form.sign-out button").await?;
    expect_heading(browser, "Sign in").await?;
    source_contains(browser, "You are signed out.").await?;
    browser
        .goto(&app.url("/console/tenants/tenant-one"))
        .await
        .map_err(|e| fail("goto after sign-out", e))?;
    expect_heading(browser, "Sign in").await?;
    if source_contains(browser, HOSTILE).await.is_ok()
        || source_contains(browser, "past_due").await.is_ok()
    {
        return Err("a signed-out browser still sees the tenant".into());
    }
    Ok(())
}

#[tokio::test]
async fn a_browser_signs_in_follows_a_tenant_to_an_event_travels_in_time_and_signs_out() {
    let app = TestApp::start().await;
    seed(&app).await;
    seed_money(&app).await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    let outcome = walk(&app, &browser).await;
    if let Err(problem) = &outcome {
        let folder = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-failures");
        std::fs::create_dir_all(&folder).unwrap();
        let file = folder.join(format!(
            "console-{}.png",
            chrono::Utc::now().format("%Y%m%dT%H%M%S")
        ));
        if let Ok(png) = browser.screenshot().await {
            std::fs::write(&file, png).unwrap();
        }
        let _ = browser.clone().close().await;
        panic!("{problem} (screenshot: {})", file.display());
    }
    browser.close().await.unwrap();
}

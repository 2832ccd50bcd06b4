//! The settings' checks: each bad value is named without being shown.

use super::*;

fn serve(args: &[&str]) -> Result<Config, ConfigError> {
    let mut argv = vec!["billing-ledger", "serve"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv).unwrap().command {
        Command::Serve(serve) => Config::from_args(&serve),
        _ => unreachable!(),
    }
}

#[test]
fn each_bad_setting_is_named_without_its_value() {
    let secret = "--webhook-secret=whsec_a,whsec_b";
    assert_eq!(serve(&[secret]).unwrap().webhook_secrets.len(), 2);
    assert!(serve(&[secret]).unwrap().reconcile.is_none());
    let timer = serve(&[
        secret,
        "--reconcile-interval=15m",
        "--stripe-secret-key=rk_test_1",
    ])
    .unwrap()
    .reconcile
    .unwrap();
    assert_eq!(timer.interval, Duration::from_secs(900));
    assert_eq!(timer.api.base, API_BASE_DEFAULT);
    let cases = [
        (
            vec!["--webhook-secret=sk_live_oops"],
            "STRIPE_WEBHOOK_SECRET",
        ),
        (
            vec![secret, "--tolerance-secs=abc"],
            "STRIPE_WEBHOOK_TOLERANCE_SECS",
        ),
        (vec![secret, "--max-body-bytes=0"], "LEDGER_MAX_BODY_BYTES"),
        (vec![secret, "--listen=nowhere"], "LEDGER_LISTEN"),
        (vec![secret, "--livemode=maybe"], "LEDGER_LIVEMODE"),
        (
            vec![secret, "--reconcile-interval=15m"],
            "STRIPE_SECRET_KEY",
        ),
        (
            vec![
                secret,
                "--reconcile-interval=often",
                "--stripe-secret-key=sk_test_oops",
            ],
            "LEDGER_RECONCILE_INTERVAL",
        ),
        (
            vec![
                secret,
                "--reconcile-interval=1m",
                "--stripe-secret-key=sk_live_oops",
                "--stripe-api-base=ftp://x",
            ],
            "STRIPE_API_BASE",
        ),
        (
            vec![secret, "--max-connections=0"],
            "LEDGER_MAX_CONNECTIONS",
        ),
        (
            vec![secret, "--header-read-timeout-secs=0"],
            "LEDGER_HEADER_READ_TIMEOUT_SECS",
        ),
        (
            vec![secret, "--idle-timeout-secs=x"],
            "LEDGER_IDLE_TIMEOUT_SECS",
        ),
        (
            vec![secret, "--console-session-key=short"],
            "LEDGER_CONSOLE_SESSION_KEY",
        ),
        (
            vec![secret, "--read-database-url=host=x port=notaport"],
            "LEDGER_READ_DATABASE_URL",
        ),
        (
            vec![secret, "--read-fallback=maybe"],
            "LEDGER_READ_FALLBACK",
        ),
    ];
    for (args, setting) in cases {
        let error = serve(&args).unwrap_err();
        assert_eq!(error.setting, setting);
        assert!(!error.to_string().contains("sk_live_oops"));
    }
}

#[test]
fn the_settle_delay_and_the_api_base_are_bounded() {
    let timer = |settle: &str| {
        serve(&[
            "--webhook-secret=whsec_a",
            "--reconcile-interval=1m",
            "--stripe-secret-key=sk_test_1",
            &format!("--reconcile-settle={settle}"),
        ])
    };
    assert_eq!(timer("1d").unwrap().reconcile.unwrap().settle, SETTLE_MAX);
    for settle in ["1000000000y", "31d", "25h"] {
        let error = timer(settle).unwrap_err();
        assert_eq!(error.setting, "LEDGER_RECONCILE_SETTLE", "{settle}");
    }
    for base in [
        "https://a.b#x",
        "https://a.b?x=1",
        "http://",
        "https://u:p@a.b",
        "http://[::1",
    ] {
        assert!(!api_base_is_plain(base), "{base}");
    }
    assert!(api_base_is_plain("http://127.0.0.1:12111/prefix"));
}

#[test]
fn platform_settings_are_checked_and_never_shown() {
    let secret = "--webhook-secret=whsec_a";
    let hook = "--webhook-endpoints=http://127.0.0.1:9/hook=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let config = serve(&[secret, hook, "--platform-tokens=tok_platform"]).unwrap();
    assert_eq!(config.platform.webhook_endpoints.len(), 1);
    assert_eq!(config.platform.retry_schedule().len(), 8);
    let shown = format!("{:?}", config.platform);
    assert!(
        !shown.contains("MfKQ") && !shown.contains("tok_platform"),
        "{shown}"
    );
    let cases = [
        (
            "--webhook-endpoints=http://x/hook",
            "LEDGER_WEBHOOK_ENDPOINTS",
        ),
        (
            "--webhook-endpoints=ftp://x=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "LEDGER_WEBHOOK_ENDPOINTS",
        ),
        (
            "--webhook-retry-schedule=soon",
            "LEDGER_WEBHOOK_RETRY_SCHEDULE",
        ),
    ];
    for (arg, setting) in cases {
        assert_eq!(serve(&[secret, arg]).unwrap_err().setting, setting, "{arg}");
    }
}

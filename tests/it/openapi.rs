//! `openapi.yaml` is generated from the code; this test keeps the committed file in step.
//! Outside CI it rewrites the file and fails when it changed; in CI (`CI` set) it only fails.

#[test]
fn openapi_yaml_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
    let generated = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async { billing_ledger::openapi_yaml() });
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    if committed == generated {
        return;
    }
    if std::env::var_os("CI").is_none() {
        std::fs::write(path, &generated).unwrap();
    }
    panic!(
        "openapi.yaml was out of date with the code{}",
        if std::env::var_os("CI").is_none() {
            "; it has been rewritten: review and commit it"
        } else {
            ": run `cargo test` locally and commit openapi.yaml"
        }
    );
}

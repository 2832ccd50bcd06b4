//! Stripe webhook signatures: parsing `Stripe-Signature`, verifying it, and producing one.
//!
//! Scheme (<https://docs.stripe.com/webhooks#verify-manually>): the header is a comma-separated
//! list of `key=value` items; `t` is the Unix timestamp of signing and each `v1` is the
//! lowercase hex HMAC-SHA256 of `"{t}." + body` keyed by the endpoint secret (the whole
//! `whsec_...` string). Where the official libraries agree on a header variant, so do we: keys
//! are exact and case-sensitive (` v1` or `V1` is not `v1`), values are what follows the first
//! `=`, unknown schemes (`v0`) and items without `=` are ignored, an empty item (a trailing
//! comma) is ignored, the last `t` counts, and a `v1` is compared as lowercase hex text. This
//! module never parses the body: it is verified as the exact bytes received.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Default `STRIPE_WEBHOOK_TOLERANCE_SECS`: Stripe's libraries' default of five minutes.
pub const TOLERANCE_SECS_DEFAULT: u64 = 300;

/// Longest `Stripe-Signature` header examined, in bytes; longer ones are refused unread.
pub const HEADER_BYTES_MAX: usize = 8192;

/// An endpoint signing secret (`whsec_...`). Its `Debug` never shows the value.
#[derive(Clone)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    /// Accepts a secret of the form `whsec_<something>`; errors describe the problem without
    /// echoing the value.
    pub fn parse(raw: &str) -> Result<WebhookSecret, &'static str> {
        match raw.strip_prefix("whsec_") {
            Some(rest) if !rest.is_empty() && !rest.contains(char::is_whitespace) => {
                Ok(WebhookSecret(raw.to_owned()))
            }
            _ => Err("each secret must look like whsec_... with no spaces"),
        }
    }

    fn mac(&self, timestamp: i64, body: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.0.as_bytes()).expect("HMAC takes any key size");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

/// Why a delivery's signature was refused; each is a 401 at the webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing Stripe-Signature header")]
    MissingHeader,
    #[error("Stripe-Signature header is longer than 8192 bytes")]
    HeaderTooLong,
    #[error("Stripe-Signature header has no valid timestamp `t`")]
    NoTimestamp,
    #[error("Stripe-Signature header has no v1 signature")]
    NoV1Signature,
    #[error("no v1 signature matches any configured secret")]
    NoMatch,
    #[error("signature timestamp is outside the tolerance")]
    OutsideTolerance,
}

/// A verified signature: what the log keeps so an auditor can re-verify later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// `t`, Unix seconds.
    pub timestamp: i64,
    /// Position (0-based) of the matching secret in the configured list.
    pub secret_index: usize,
    /// The matching `v1` value (a MAC, not a secret).
    pub signature: String,
}

struct Header<'h> {
    timestamp: i64,
    v1: Vec<&'h str>,
}

fn parse_header(header: &str) -> Result<Header<'_>, SignatureError> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.split_once('=') else {
            continue;
        };
        match key {
            "t" => timestamp = Some(parse_timestamp(value)),
            "v1" => v1.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.flatten().ok_or(SignatureError::NoTimestamp)?;
    if v1.is_empty() {
        return Err(SignatureError::NoV1Signature);
    }
    Ok(Header { timestamp, v1 })
}

/// Decimal digits after an optional `+` or `-`, nothing else (no spaces or `_`): what Go's
/// `strconv.ParseInt`, Python's `int` and Node's `parseInt` all accept. The MAC is computed
/// over the number as they re-render it (`+100` signs as `100`).
fn parse_timestamp(value: &str) -> Option<i64> {
    let digits = value.strip_prefix(['+', '-']).unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Verifies `header` over `body` against every secret at `now` (Unix seconds).
///
/// Passes when any `v1` equals the MAC under any secret (compared in constant time) and
/// `|now - t| <= tolerance_secs`. Stripe's libraries check only the age; we also refuse a `t`
/// more than the tolerance in the future.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[WebhookSecret],
    tolerance_secs: u64,
    now: i64,
) -> Result<Verified, SignatureError> {
    let header = header.ok_or(SignatureError::MissingHeader)?;
    if header.len() > HEADER_BYTES_MAX {
        return Err(SignatureError::HeaderTooLong);
    }
    let parsed = parse_header(header)?;
    let mut matched = None;
    for (secret_index, secret) in secrets.iter().enumerate() {
        let expected = secret.mac(parsed.timestamp, body);
        for candidate in &parsed.v1 {
            let equal = candidate.len() == expected.len()
                && bool::from(candidate.as_bytes().ct_eq(expected.as_bytes()));
            if equal && matched.is_none() {
                matched = Some(Verified {
                    timestamp: parsed.timestamp,
                    secret_index,
                    signature: expected.clone(),
                });
            }
        }
    }
    let verified = matched.ok_or(SignatureError::NoMatch)?;
    let age = i128::from(now) - i128::from(verified.timestamp);
    if age.unsigned_abs() > u128::from(tolerance_secs) {
        return Err(SignatureError::OutsideTolerance);
    }
    Ok(verified)
}

/// A `Stripe-Signature` header value for `body` signed at `timestamp`: `t=<timestamp>,v1=<hex>`.
pub fn sign(secret: &WebhookSecret, timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", secret.mac(timestamp, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> WebhookSecret {
        WebhookSecret::parse(s).unwrap()
    }

    #[test]
    fn header_variants_follow_the_stripe_libraries() {
        let key = secret("whsec_test");
        let body = b"{}";
        let good = sign(&key, 100, body);
        let mac = good.split_once("v1=").unwrap().1;
        let check = |h: &str| verify(Some(h), body, std::slice::from_ref(&key), 300, 100);
        assert!(check(&good).is_ok());
        assert!(check(&format!("{good},")).is_ok(), "trailing comma");
        assert!(
            check(&format!("t=100,v0=abc,v1={mac},x=y")).is_ok(),
            "unknown schemes"
        );
        assert!(
            check(&format!("t=100,junk,v1={mac}")).is_ok(),
            "item without ="
        );
        assert_eq!(
            check(&format!("t=100, v1={mac}")),
            Err(SignatureError::NoV1Signature)
        );
        assert_eq!(
            check(&format!("t=100,V1={mac}")),
            Err(SignatureError::NoV1Signature)
        );
        assert_eq!(
            check(&format!("T=100,v1={mac}")),
            Err(SignatureError::NoTimestamp)
        );
        assert!(check(&format!("t=+100,v1={mac}")).is_ok(), "leading +");
        assert_eq!(
            check(&format!("t=+-100,v1={mac}")),
            Err(SignatureError::NoTimestamp)
        );
        assert_eq!(
            check(&format!("t=1_00,v1={mac}")),
            Err(SignatureError::NoTimestamp)
        );
        let upper = mac.to_uppercase();
        assert_eq!(
            check(&format!("t=100,v1={upper}")),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(check(""), Err(SignatureError::NoTimestamp));
    }
}

#[cfg(test)]
mod fuzz {
    //! Bounded fuzzing of the header parser: any header, any body, never a panic, and never a
    //! pass without the secret's MAC.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn arbitrary_headers_never_panic_or_pass(header in ".{0,300}", body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let key = WebhookSecret::parse("whsec_fuzz").unwrap();
            prop_assert!(verify(Some(&header), &body, &[key], 300, 1_700_000_000).is_err());
        }

        #[test]
        fn structured_headers_pass_only_with_the_mac(
            t in 1_699_999_000i64..1_700_001_000,
            extra in proptest::collection::vec("(v0|v1|t|x|V1| v1)=[0-9a-f]{0,64}", 0..4),
            body in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let key = WebhookSecret::parse("whsec_fuzz").unwrap();
            let good = sign(&key, t, &body);
            let mac = good.split_once("v1=").unwrap().1.to_owned();
            let mut items = extra.clone();
            items.push(format!("t={t}"));
            let forged = items.join(",");
            let forged_result = verify(Some(&forged), &body, std::slice::from_ref(&key), 300, 1_700_000_000);
            let expected_item = format!("v1={}", mac);
            let mac_given = extra.contains(&expected_item);
            prop_assert!(forged_result.is_err() || mac_given);
            items.push(format!("v1={mac}"));
            let fresh = (t - 1_700_000_000).abs() <= 300;
            let result = verify(Some(&items.join(",")), &body, &[key], 300, 1_700_000_000);
            prop_assert_eq!(result.is_ok(), fresh);
        }
    }
}

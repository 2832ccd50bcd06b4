//! Standard Webhooks signatures (https://www.standardwebhooks.com/, "Signature scheme"):
//! HMAC-SHA256, keyed by the secret's base64-decoded bytes, over `{webhook-id}.{webhook-timestamp}.{body}`,
//! sent as `webhook-signature: v1,<base64>`. The secret is `whsec_` followed by base64 of 24 to
//! 64 random bytes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Random bytes in a secret the service creates (the specification asks for 24 to 64).
pub const SECRET_BYTES: usize = 32;
/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// An endpoint's signing key; its `Debug` never shows it.
#[derive(Clone)]
pub struct SigningSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(..)")
    }
}

impl SigningSecret {
    /// Reads `whsec_<base64>`. Errors say what is wrong, never the value.
    pub fn parse(text: &str) -> Result<SigningSecret, &'static str> {
        let encoded = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or("a signing secret starts with whsec_")?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| "a signing secret is whsec_ followed by base64")?;
        if key.len() < 16 {
            return Err("a signing secret carries at least 16 bytes");
        }
        Ok(SigningSecret { key })
    }

    /// A fresh random secret, as `whsec_<base64>` text.
    pub fn generate() -> String {
        let mut key = Vec::with_capacity(SECRET_BYTES);
        while key.len() < SECRET_BYTES {
            key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        }
        key.truncate(SECRET_BYTES);
        format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
    }

    /// The `webhook-signature` header value for message `id` sent at `timestamp` (Unix
    /// seconds) with `body`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of the specification's reference libraries (standard-webhooks,
    /// `libraries/python/standardwebhooks/tests.py`).
    #[test]
    fn signs_the_specification_test_vector() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn generated_secrets_parse() {
        let text = SigningSecret::generate();
        assert!(text.starts_with("whsec_"));
        assert_eq!(SigningSecret::parse(&text).unwrap().key.len(), SECRET_BYTES);
        assert!(SigningSecret::parse("whsec_!!").is_err());
    }
}

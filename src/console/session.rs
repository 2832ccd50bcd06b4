//! Console sessions: a bearer token presented once at sign-in becomes a signed cookie, and
//! every request finds its role again from the tokens configured now.
//!
//! The cookie is `<expires unix seconds>.<nonce hex>.<MAC hex>`, the MAC being HMAC-SHA256
//! under the session key of the token, the expiry and the nonce. It carries no role and never
//! the token: a request is signed in when some configured token (admin first, as the API
//! checks) gives the same MAC, compared in constant time, before the expiry. Removing a token
//! from the configuration therefore ends its sessions too. Sessions are stateless: signing
//! out clears the browser's cookie, and a copied cookie stays valid until it expires
//! ([`SESSION_SECS`]).
//!
//! Admin forms carry a CSRF token, the HMAC of the session cookie under the same key: another
//! site can neither read it nor (the cookie being `SameSite=Strict`) send the cookie at all.
//! Nothing here does I/O.

use crate::http::auth::{Role, Tokens};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "ledger_console";
/// How long a session lasts after sign-in, seconds (8 hours: a working day).
pub const SESSION_SECS: i64 = 8 * 3600;
/// Clock difference tolerated between instances sharing a session key, seconds: a cookie
/// issued by an instance whose clock is ahead must not look as if it outlived its lifetime.
pub const CLOCK_SKEW_SECS: i64 = 300;
/// Shortest accepted `LEDGER_CONSOLE_SESSION_KEY`, bytes.
pub const SESSION_KEY_BYTES_MIN: usize = 32;

/// The key sessions and CSRF tokens are MACed with.
#[derive(Clone)]
pub struct SessionKey(Vec<u8>);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(redacted)")
    }
}

impl SessionKey {
    /// The configured key (`LEDGER_CONSOLE_SESSION_KEY`), or a fresh random one for this
    /// process: 244 random bits from two version-4 UUIDs (the OS's random source). With a
    /// per-process key, sessions end when the process restarts and are not shared between
    /// instances.
    pub fn new(configured: Option<&str>) -> SessionKey {
        match configured {
            Some(key) => SessionKey(key.as_bytes().to_vec()),
            None => {
                let mut key = uuid::Uuid::new_v4().as_bytes().to_vec();
                key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
                SessionKey(key)
            }
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }

    /// A new session cookie value for `token`, valid until `now_unix + SESSION_SECS`.
    pub fn issue(&self, token: &str, now_unix: i64) -> String {
        let expires = now_unix + SESSION_SECS;
        let nonce = hex::encode(uuid::Uuid::new_v4().as_bytes());
        let mac = self.session_mac(token, expires, &nonce);
        format!("{expires}.{nonce}.{}", hex::encode(mac))
    }

    fn session_mac(&self, token: &str, expires: i64, nonce: &str) -> Vec<u8> {
        self.mac(&[
            b"session",
            token.as_bytes(),
            &expires.to_be_bytes(),
            nonce.as_bytes(),
        ])
    }

    /// The role of a session cookie at `now_unix`: `None` when it is malformed, expired, or
    /// made for a token no longer configured.
    pub fn role(&self, cookie: &str, tokens: &Tokens, now_unix: i64) -> Option<Role> {
        let mut parts = cookie.splitn(3, '.');
        let expires: i64 = parts.next()?.parse().ok()?;
        let nonce = parts.next()?;
        let presented = hex::decode(parts.next()?).ok()?;
        if expires <= now_unix || expires > now_unix + SESSION_SECS + CLOCK_SKEW_SECS {
            return None;
        }
        let matches = |candidates: &[String]| {
            candidates.iter().fold(false, |found, token| {
                let mac = self.session_mac(token, expires, nonce);
                found | bool::from(mac.ct_eq(&presented))
            })
        };
        if matches(&tokens.admin) {
            Some(Role::Admin)
        } else if matches(&tokens.finance) {
            Some(Role::Finance)
        } else {
            None
        }
    }

    /// The CSRF token for forms of the session `cookie` (hex).
    pub fn csrf(&self, cookie: &str) -> String {
        hex::encode(self.mac(&[b"csrf", cookie.as_bytes()]))
    }

    /// Whether `presented` is the CSRF token of `cookie` (constant time).
    pub fn csrf_matches(&self, cookie: &str, presented: &str) -> bool {
        bool::from(self.csrf(cookie).as_bytes().ct_eq(presented.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens {
            finance: vec!["fin".into()],
            admin: vec!["adm".into()],
            platform: vec!["plat".into()],
        }
    }

    #[test]
    fn a_session_keeps_its_token_role_until_it_expires() {
        let key = SessionKey::new(None);
        let now = 1_700_000_000;
        let admin = key.issue("adm", now);
        let finance = key.issue("fin", now);
        assert_eq!(key.role(&admin, &tokens(), now), Some(Role::Admin));
        assert_eq!(key.role(&finance, &tokens(), now + 60), Some(Role::Finance));
        assert_eq!(key.role(&finance, &tokens(), now + SESSION_SECS), None);
        assert_ne!(
            key.issue("fin", now),
            finance,
            "each sign-in gets its own nonce"
        );
    }

    #[test]
    fn forged_tampered_or_revoked_sessions_are_refused() {
        let key = SessionKey::new(Some("a configured key of at least 32 bytes!!"));
        let now = 1_700_000_000;
        let cookie = key.issue("fin", now);
        let other = SessionKey::new(None);
        assert_eq!(other.role(&cookie, &tokens(), now), None);
        let (expires, rest) = cookie.split_once('.').unwrap();
        let later = format!("{}.{rest}", expires.parse::<i64>().unwrap() + 1);
        assert_eq!(key.role(&later, &tokens(), now), None);
        let skewed = key.issue("fin", now + CLOCK_SKEW_SECS);
        assert_eq!(key.role(&skewed, &tokens(), now), Some(Role::Finance));
        let far = key.issue("fin", now + CLOCK_SKEW_SECS + 1);
        assert_eq!(key.role(&far, &tokens(), now), None);
        let revoked = Tokens {
            finance: vec!["new".into()],
            admin: vec![],
            platform: vec![],
        };
        assert_eq!(key.role(&cookie, &revoked, now), None);
        for junk in ["", "1.2", "x.y.z", "99999999999.00.zz"] {
            assert_eq!(key.role(junk, &tokens(), now), None);
        }
    }

    #[test]
    fn csrf_tokens_belong_to_one_session() {
        let key = SessionKey::new(None);
        let a = key.issue("adm", 1);
        let b = key.issue("adm", 1);
        assert!(key.csrf_matches(&a, &key.csrf(&a)));
        assert!(!key.csrf_matches(&a, &key.csrf(&b)));
        assert!(!key.csrf_matches(&a, ""));
    }
}

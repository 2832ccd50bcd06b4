//! Bearer tokens: finance tokens read, admin tokens read and administer, platform tokens read
//! only what the platform needs (the change feed, tenants, entitlements), never finance data.
//!
//! Tokens are compared in constant time (`subtle`) against every configured token, so timing
//! says nothing about how much of a guess was right. Tokens are never logged.

use super::error::ApiError;
use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::SecurityScheme;
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Finance,
    Admin,
    /// `LEDGER_PLATFORM_TOKENS`: the feed, tenants and entitlements only.
    Platform,
}

/// Configured tokens, kept in request data.
#[derive(Clone, Default)]
pub struct Tokens {
    pub finance: Vec<String>,
    pub admin: Vec<String>,
    pub platform: Vec<String>,
}

impl Tokens {
    /// The role of a presented token (admin first), compared in constant time.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let matches = |tokens: &[String]| {
            tokens.iter().fold(false, |found, token| {
                found | bool::from(token.as_bytes().ct_eq(presented.as_bytes()))
            })
        };
        if matches(&self.admin) {
            Some(Role::Admin)
        } else if matches(&self.finance) {
            Some(Role::Finance)
        } else if matches(&self.platform) {
            Some(Role::Platform)
        } else {
            None
        }
    }
}

/// A bearer token from `LEDGER_FINANCE_TOKENS` or `LEDGER_ADMIN_TOKENS` (a platform token is
/// refused with 403: finance data is not the platform's).
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check")]
pub struct TokenAuth(pub Role);

fn role(request: &Request, bearer: &Bearer) -> poem::Result<Role> {
    let tokens = request.data::<Tokens>().cloned().unwrap_or_default();
    tokens
        .role_of(&bearer.token)
        .ok_or_else(|| ApiError::unauthorized().into())
}

async fn check(request: &Request, bearer: Bearer) -> poem::Result<Role> {
    match role(request, &bearer)? {
        Role::Platform => Err(ApiError::Forbidden(super::error::body(
            "a platform token reads the feed, tenants and entitlements only",
        ))
        .into()),
        other => Ok(other),
    }
}

/// A bearer token from `LEDGER_PLATFORM_TOKENS`, `LEDGER_FINANCE_TOKENS` or
/// `LEDGER_ADMIN_TOKENS`: the routes the platform reads.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check_platform")]
pub struct PlatformAuth(pub Role);

async fn check_platform(request: &Request, bearer: Bearer) -> poem::Result<Role> {
    role(request, &bearer)
}

impl TokenAuth {
    /// Refuses (403) anything but an admin token.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.0 {
            Role::Admin => Ok(()),
            Role::Finance | Role::Platform => Err(ApiError::Forbidden(super::error::body(
                "this route needs an admin token",
            ))),
        }
    }
}

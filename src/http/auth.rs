//! Bearer tokens: finance tokens read, admin tokens read and administer.
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
}

/// Configured tokens, kept in request data.
#[derive(Clone, Default)]
pub struct Tokens {
    pub finance: Vec<String>,
    pub admin: Vec<String>,
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
        } else {
            None
        }
    }
}

/// A bearer token from `LEDGER_FINANCE_TOKENS` or `LEDGER_ADMIN_TOKENS`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check")]
pub struct TokenAuth(pub Role);

async fn check(request: &Request, bearer: Bearer) -> poem::Result<Role> {
    let tokens = request.data::<Tokens>().cloned().unwrap_or_default();
    tokens
        .role_of(&bearer.token)
        .ok_or_else(|| ApiError::unauthorized().into())
}

impl TokenAuth {
    /// Refuses (403) anything but an admin token.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.0 {
            Role::Admin => Ok(()),
            Role::Finance => Err(ApiError::Forbidden(super::error::body(
                "this route needs an admin token",
            ))),
        }
    }
}

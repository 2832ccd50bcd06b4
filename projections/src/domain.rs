//! The domain's values, parsed once where the raw value enters (a webhook body, an HTTP
//! parameter, a database row) and carried typed from there on: a Stripe event ID, a tenant ID,
//! a position in the log, a currency and an amount of money in it.
//!
//! Each type's `parse` states the rule it enforces and where the rule comes from; a value that
//! fails it never reaches the log or a query. The fold keeps its own compact representation
//! inside ([`crate::ledger`], [`crate::money`]) and hands these out at its boundary.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest event or tenant ID accepted, in bytes (Stripe's are far shorter; PostgreSQL's B-tree
/// entries stay well under their size limit).
pub const ID_BYTES_MAX: usize = 255;

/// Why a raw value is not a domain value; the message names the rule, for a 400's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

/// Checks the rule every stored identifier shares: non-empty, at most [`ID_BYTES_MAX`] bytes,
/// no NUL (PostgreSQL `text` cannot hold one).
fn identifier(raw: &str, what: &str) -> Result<(), Invalid> {
    if raw.is_empty() || raw.len() > ID_BYTES_MAX || raw.contains('\0') {
        return Err(Invalid(format!(
            "{what} must be 1 to {ID_BYTES_MAX} bytes without NUL"
        )));
    }
    Ok(())
}

/// A Stripe event ID (`evt_1Q...`), the log's idempotency key
/// (<https://docs.stripe.com/webhooks#handle-duplicate-events>), or one of the ledger's own
/// (`evt_ledger_...`, see [`crate::facts::LEDGER_EVENT_ID_PREFIX`]).
///
/// Rule: 1 to 255 bytes, no NUL: what the envelope accepts ([`crate::envelope`]), so every ID
/// already in a log parses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventId(String);

impl EventId {
    /// Parses `raw`; errors name the rule.
    pub fn parse(raw: &str) -> Result<EventId, Invalid> {
        identifier(raw, "an event ID")?;
        Ok(EventId(raw.to_owned()))
    }

    /// The ID as Stripe wrote it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is one of the ledger's own events (an admin's correction), never Stripe's.
    pub fn is_ledger_own(&self) -> bool {
        self.0.starts_with(crate::facts::LEDGER_EVENT_ID_PREFIX)
    }
}

/// A tenant of the platform, as Stripe objects name it (`metadata.tenant_id`,
/// `client_reference_id`) or an admin links it.
///
/// Rule: 1 to 255 bytes, no NUL: the fold's rule for a tenant named in Stripe's metadata
/// (Stripe allows metadata values of 500 characters; a longer one is a projection error rather
/// than silently cut). What an admin may type is stricter; see [`TenantId::parse_typed`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    /// Parses a tenant ID as found in Stripe's objects or asked for in a query.
    pub fn parse(raw: &str) -> Result<TenantId, Invalid> {
        identifier(raw, "tenant_id")?;
        Ok(TenantId(raw.to_owned()))
    }

    /// Parses a tenant ID a person types (an admin's link): also no control characters, no
    /// Unicode format characters (zero-width and bidirectional marks, which make two IDs look
    /// alike), and no surrounding spaces.
    pub fn parse_typed(raw: &str) -> Result<TenantId, Invalid> {
        let id = TenantId::parse(raw)?;
        let hidden = raw.chars().any(|c| c.is_control() || is_format_character(c));
        if hidden || raw.trim() != raw {
            return Err(Invalid(format!(
                "tenant_id must be 1 to {ID_BYTES_MAX} bytes without control or invisible \
                 formatting characters or surrounding spaces"
            )));
        }
        Ok(id)
    }

    /// The ID as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Unicode's invisible formatting characters (general category Cf) that matter in an ID: soft
/// hyphen, zero-width space/joiners, word joiner, bidirectional marks, embeddings and
/// isolates, and the byte-order mark.
fn is_format_character(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}')
}

/// A position in the log: events are numbered 1, 2, 3, ... in append order, densely (no gaps);
/// 0 is the position before the first event (a checkpoint that has folded nothing).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(try_from = "i64", into = "i64")]
pub struct LogPosition(i64);

impl LogPosition {
    /// Before the first event.
    pub const START: LogPosition = LogPosition(0);

    /// Parses a position: 0 or more.
    pub fn new(position: i64) -> Result<LogPosition, Invalid> {
        if position < 0 {
            return Err(Invalid(format!(
                "a log position is 0 or more, not {position}"
            )));
        }
        Ok(LogPosition(position))
    }

    /// The position as PostgreSQL's `bigint` holds it.
    pub fn get(self) -> i64 {
        self.0
    }

    /// The position `n` events later, saturating (a log never holds 2^63 events).
    pub fn after(self, n: i64) -> LogPosition {
        LogPosition(self.0.saturating_add(n.max(0)))
    }
}

/// A currency as Stripe writes it: a three-letter ISO 4217 code in lower case (`usd`, `jpy`,
/// `kwd`; <https://docs.stripe.com/currencies>). Parsing accepts any case and keeps lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

/// Currencies whose Stripe amounts count whole units (exponent 0), from Stripe's list of
/// zero-decimal currencies (<https://docs.stripe.com/currencies#zero-decimal>). Where Stripe
/// departs from ISO 4217 we follow Stripe, since the amounts are Stripe's: ISK is zero-decimal
/// in ISO 4217 but Stripe counts it in hundredths, MGA the other way round.
const ZERO_DECIMAL: [&str; 16] = [
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

/// Currencies whose amounts count thousandths (exponent 3; Stripe's three-decimal currencies).
const THREE_DECIMAL: [&str; 7] = ["bhd", "iqd", "jod", "kwd", "lyd", "omr", "tnd"];

impl Currency {
    /// Parses three ASCII letters, any case.
    pub fn parse(raw: &str) -> Result<Currency, Invalid> {
        match raw.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|b| b.is_ascii_alphabetic()) => Ok(Currency([
                a.to_ascii_lowercase(),
                b.to_ascii_lowercase(),
                c.to_ascii_lowercase(),
            ])),
            _ => Err(Invalid(format!(
                "a currency is a three-letter ISO 4217 code such as usd, not {raw:?}"
            ))),
        }
    }

    /// The code in lower case, as Stripe writes it.
    pub fn as_str(&self) -> &str {
        // Always three ASCII letters (see `parse`).
        std::str::from_utf8(&self.0).unwrap_or("xxx")
    }

    /// Digits after the decimal point in Stripe's amounts of this currency: 0, 2 or 3.
    pub fn exponent(&self) -> u32 {
        let code = self.as_str();
        if ZERO_DECIMAL.contains(&code) {
            0
        } else if THREE_DECIMAL.contains(&code) {
            3
        } else {
            2
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount of money: an integer count of the currency's minor unit (cents for `usd`, yen for
/// `jpy`, fils for `kwd`), as Stripe's API gives amounts
/// (<https://docs.stripe.com/currencies#minor-units>). Never a float; amounts of two currencies
/// are never added ([`Money::checked_add`] refuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Minor units; negative for money going back (a refund, a credit).
    pub amount: i64,
    pub currency: Currency,
}

impl Money {
    /// `amount` minor units of `currency`.
    pub fn new(amount: i64, currency: Currency) -> Money {
        Money { amount, currency }
    }

    /// The sum of two amounts of one currency; `None` when the currencies differ or the sum
    /// overflows `i64`.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        if self.currency != other.currency {
            return None;
        }
        Some(Money::new(
            self.amount.checked_add(other.amount)?,
            self.currency,
        ))
    }

    /// The amount in major units as exact decimal text: `4900 usd` is `49.00`, `4900 jpy`
    /// `4900`, `1250 kwd` `1.250`, `-5 eur` `-0.05`.
    pub fn decimal(&self) -> String {
        let digits = self.currency.exponent();
        let magnitude = self.amount.unsigned_abs();
        let scale = 10u64.pow(digits);
        let sign = if self.amount < 0 { "-" } else { "" };
        match digits {
            0 => format!("{sign}{magnitude}"),
            _ => format!(
                "{sign}{}.{:0width$}",
                magnitude / scale,
                magnitude % scale,
                width = digits as usize
            ),
        }
    }
}

impl fmt::Display for Money {
    /// `49.00 usd`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.decimal(), self.currency)
    }
}

macro_rules! string_conversions {
    ($($name:ident),*) => {$(
        impl TryFrom<String> for $name {
            type Error = Invalid;
            fn try_from(raw: String) -> Result<$name, Invalid> {
                $name::parse(&raw)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.as_str().to_owned()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = Invalid;
            fn from_str(raw: &str) -> Result<$name, Invalid> {
                $name::parse(raw)
            }
        }
    )*};
}

string_conversions!(EventId, TenantId);

impl TryFrom<String> for Currency {
    type Error = Invalid;
    fn try_from(raw: String) -> Result<Currency, Invalid> {
        Currency::parse(&raw)
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> String {
        value.as_str().to_owned()
    }
}

impl std::str::FromStr for Currency {
    type Err = Invalid;
    fn from_str(raw: &str) -> Result<Currency, Invalid> {
        Currency::parse(raw)
    }
}

impl TryFrom<i64> for LogPosition {
    type Error = Invalid;
    fn try_from(raw: i64) -> Result<LogPosition, Invalid> {
        LogPosition::new(raw)
    }
}

impl From<LogPosition> for i64 {
    fn from(position: LogPosition) -> i64 {
        position.0
    }
}

impl fmt::Display for LogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_refuse_empty_nul_and_overlong_values() {
        assert!(EventId::parse("evt_1").is_ok());
        assert!(EventId::parse("").is_err());
        assert!(EventId::parse("evt_\0").is_err());
        assert!(EventId::parse(&"e".repeat(256)).is_err());
        assert!(EventId::parse(&"e".repeat(255)).is_ok());
        assert!(EventId::parse("evt_ledger_1").unwrap().is_ledger_own());
        assert!(!EventId::parse("evt_1").unwrap().is_ledger_own());
        assert!(TenantId::parse(" spaced ").is_ok());
    }

    #[test]
    fn typed_tenant_ids_refuse_what_hides_in_them() {
        assert!(TenantId::parse_typed("tenant-acme").is_ok());
        for hidden in ["a\u{200B}b", "a\u{202E}b", "\u{FEFF}a", "a\tb", " a", "a "] {
            assert!(TenantId::parse_typed(hidden).is_err(), "{hidden:?}");
        }
    }

    #[test]
    fn currencies_are_three_letters_kept_in_lower_case() {
        assert_eq!(Currency::parse("USD").unwrap().as_str(), "usd");
        for bad in ["", "us", "usdd", "u$d", "us\0", "€€"] {
            assert!(Currency::parse(bad).is_err(), "{bad:?}");
        }
        let exponents: Vec<u32> = ["usd", "jpy", "kwd", "isk", "mga"]
            .iter()
            .map(|c| Currency::parse(c).unwrap().exponent())
            .collect();
        assert_eq!(exponents, [2, 0, 3, 2, 0]);
    }

    #[test]
    fn money_never_adds_across_currencies_and_prints_exact_decimals() {
        let usd = Currency::parse("usd").unwrap();
        let jpy = Currency::parse("jpy").unwrap();
        assert_eq!(
            Money::new(4900, usd).checked_add(Money::new(100, usd)),
            Some(Money::new(5000, usd))
        );
        assert_eq!(Money::new(4900, usd).checked_add(Money::new(1, jpy)), None);
        assert_eq!(Money::new(i64::MAX, usd).checked_add(Money::new(1, usd)), None);
        assert_eq!(Money::new(4900, usd).to_string(), "49.00 usd");
        assert_eq!(Money::new(4900, jpy).decimal(), "4900");
        let kwd = Currency::parse("kwd").unwrap();
        assert_eq!(Money::new(-1250, kwd).decimal(), "-1.250");
        assert_eq!(Money::new(i64::MIN, usd).decimal(), "-92233720368547758.08");
    }

    #[test]
    fn positions_are_never_negative() {
        assert_eq!(LogPosition::new(0).unwrap(), LogPosition::START);
        assert!(LogPosition::new(-1).is_err());
        assert_eq!(LogPosition::START.after(3).get(), 3);
        assert_eq!(LogPosition::new(i64::MAX).unwrap().after(1).get(), i64::MAX);
    }
}

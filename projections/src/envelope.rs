//! The Stripe event envelope: the few top-level fields every event carries.
//!
//! Parsing here is the boundary between "bytes Stripe signed" and "an event we can store and fold".
//! It checks only what the log needs (`id`, `type`, `created`, `data.object`) and never looks at
//! the object's own shape: that is the fold's business, and an object we cannot read is a
//! projection error, not a rejected delivery. Reference: <https://docs.stripe.com/api/events/object>.

use serde_json::Value;
use std::fmt;

/// Longest `id`, `type`, `api_version` or `account` accepted, in bytes. Stripe's are far shorter.
pub const IDENTIFIER_BYTES_MAX: usize = 255;

/// Latest `created` accepted: 9999-12-31T23:59:59Z, in Unix seconds (the last instant that
/// RFC 3339 and PostgreSQL's `timestamptz` both render with a four-digit year).
pub const CREATED_MAX: i64 = 253_402_300_799;

/// A Stripe event whose envelope has been checked; `object` is `data.object`, unread.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Stripe's event ID (`evt_...`); the log's idempotency key.
    pub id: String,
    /// Stripe's event type, e.g. `customer.subscription.updated`.
    pub event_type: String,
    /// Stripe's `created`: Unix seconds at which the event happened.
    pub created: i64,
    /// `livemode`; `false` when absent (test-mode templates omit it).
    pub livemode: bool,
    /// `api_version` the payload is rendered in; absent or null on some old and templated events.
    pub api_version: Option<String>,
    /// Connected account (`account`), present on Connect events.
    pub account: Option<String>,
    /// `data.object`, the object snapshot as rendered for the endpoint's API version.
    pub object: Value,
    /// `data.previous_attributes`, present on `*.updated` events.
    pub previous_attributes: Option<Value>,
}

/// Why a verified body is not a Stripe event. Each maps to a 400 at the webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The body is not JSON (or nests deeper than serde_json's recursion limit of 128).
    NotJson(String),
    /// The top level is not a JSON object.
    NotAnObject,
    /// A required field is absent or has the wrong JSON type.
    Field {
        name: &'static str,
        expected: &'static str,
    },
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::NotJson(cause) => write!(f, "body is not JSON: {cause}"),
            EnvelopeError::NotAnObject => write!(f, "body is not a JSON object"),
            EnvelopeError::Field { name, expected } => {
                write!(f, "`{name}` must be {expected}")
            }
        }
    }
}

impl std::error::Error for EnvelopeError {}

impl Event {
    /// Parses raw bytes as received. Errors: [`EnvelopeError`] naming the first failed field.
    pub fn parse(bytes: &[u8]) -> Result<Event, EnvelopeError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
        Event::from_value(value)
    }

    /// Checks an already parsed JSON value (as `import` reads from JSON lines).
    pub fn from_value(mut value: Value) -> Result<Event, EnvelopeError> {
        let top = value.as_object_mut().ok_or(EnvelopeError::NotAnObject)?;
        let id = identifier(top.get("id"), "id")?.ok_or(missing("id", "a string"))?;
        let event_type = identifier(top.get("type"), "type")?.ok_or(missing("type", "a string"))?;
        let created = top
            .get("created")
            .and_then(Value::as_i64)
            .filter(|c| (0..=CREATED_MAX).contains(c))
            .ok_or(missing("created", "an integer count of Unix seconds"))?;
        let livemode = match top.get("livemode") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(missing("livemode", "a boolean")),
        };
        let api_version = identifier(top.get("api_version"), "api_version")?;
        let account = identifier(top.get("account"), "account")?;
        let data = top
            .get_mut("data")
            .and_then(Value::as_object_mut)
            .ok_or(missing("data", "an object"))?;
        let object = data.remove("object").filter(Value::is_object);
        let object = object.ok_or(missing("data.object", "an object"))?;
        let previous_attributes = data.remove("previous_attributes");
        Ok(Event {
            id,
            event_type,
            created,
            livemode,
            api_version,
            account,
            object,
            previous_attributes,
        })
    }

    /// `data.object.id`, when it is a string (some objects, like `invoice.upcoming`, have none).
    pub fn object_id(&self) -> Option<&str> {
        self.object.get("id").and_then(Value::as_str)
    }

    /// `data.object.object`, the object's type (`subscription`, `invoice`, ...).
    pub fn object_type(&self) -> Option<&str> {
        self.object.get("object").and_then(Value::as_str)
    }
}

fn missing(name: &'static str, expected: &'static str) -> EnvelopeError {
    EnvelopeError::Field { name, expected }
}

/// Reads an optional short string field: absent or null is `None`; anything else must be a
/// non-empty string without NUL (PostgreSQL `text` refuses NUL) of at most
/// [`IDENTIFIER_BYTES_MAX`] bytes.
fn identifier(value: Option<&Value>, name: &'static str) -> Result<Option<String>, EnvelopeError> {
    const EXPECTED: &str = "a non-empty string of at most 255 bytes without NUL";
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s))
            if !s.is_empty() && s.len() <= IDENTIFIER_BYTES_MAX && !s.contains('\0') =>
        {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(missing(name, EXPECTED)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_minimal_event() {
        let e = Event::parse(br#"{"id":"evt_1","type":"x.y","created":5,"data":{"object":{"id":"o_1","object":"thing"}}}"#).unwrap();
        assert_eq!(e.id, "evt_1");
        assert_eq!(e.created, 5);
        assert!(!e.livemode);
        assert_eq!(e.object_id(), Some("o_1"));
        assert_eq!(e.object_type(), Some("thing"));
    }

    #[test]
    fn names_the_failed_field() {
        let err = Event::parse(br#"{"id":"evt_1","type":"x","created":"5","data":{"object":{}}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("`created`"), "{err}");
        let err = Event::parse(br#"{"id":"evt_1","type":"x","created":5,"data":{}}"#).unwrap_err();
        assert!(err.to_string().contains("data.object"), "{err}");
        let err = Event::parse(br#"{"id":"e\u0000","type":"x","created":5,"data":{"object":{}}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("`id`"), "{err}");
        assert!(matches!(
            Event::parse(b"[1]"),
            Err(EnvelopeError::NotAnObject)
        ));
        assert!(matches!(
            Event::parse(b"nope"),
            Err(EnvelopeError::NotJson(_))
        ));
    }
}

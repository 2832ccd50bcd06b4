//! The Stripe event envelope: the few top-level fields every event carries.
//!
//! Parsing here is the boundary between "bytes Stripe signed" and "an event we can store and fold".
//! It checks only what the log needs (`id`, `type`, `created`, `data.object`) and never looks at
//! the object's own shape: that is the fold's business, and an object we cannot read is a
//! projection error, not a rejected delivery. Reference: <https://docs.stripe.com/api/events/object>.
//!
//! A Stripe object carries dozens of members the fold never reads (a 3 KB invoice may hold ten
//! useful fields), and a rebuild parses every body in the log. So [`Event::parse`] builds only
//! the members named by [`kept`], at any depth; every other member is checked as JSON and
//! skipped without being allocated.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
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
    /// `data.object`, the object snapshot as rendered for the endpoint's API version. After
    /// [`Event::parse`] it holds only the members [`kept`] names; the stored body keeps all.
    pub object: Value,
}

/// Why a verified body is not a Stripe event. Each maps to a 400 at the webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The body is not UTF-8 JSON, or nests deeper than serde_json's recursion limit of 128
    /// within a member [`kept`] names (skipped members are walked without recursion, so any
    /// depth the body-size limit allows is safe there).
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
    /// Parses raw bytes as received, keeping only the members [`kept`] names. The whole body
    /// must be UTF-8 JSON (RFC 8259 section 8.1), skipped members included. Errors:
    /// [`EnvelopeError`] naming the first failed field.
    pub fn parse(bytes: &[u8]) -> Result<Event, EnvelopeError> {
        let not_json = |e: &dyn fmt::Display| EnvelopeError::NotJson(e.to_string());
        let text = std::str::from_utf8(bytes).map_err(|e| not_json(&e))?;
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let value = Pruned
            .deserialize(&mut deserializer)
            .and_then(|value| deserializer.end().map(|()| value))
            .map_err(|e| not_json(&e))?;
        Event::from_value(value)
    }

    /// Checks an already parsed JSON value (as `import` reads from JSON lines); `object` is
    /// kept whole.
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
        Ok(Event {
            id,
            event_type,
            created,
            livemode,
            api_version,
            account,
            object,
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

/// Whether [`Event::parse`] keeps members named `key`: the envelope's own fields and every
/// field [`crate::facts`] reads. Matched by name at any depth (so `data` keeps both the
/// envelope's `data` and a list's `data`); a test checks that a pruned event reads as the whole.
pub fn kept(key: &str) -> bool {
    matches!(
        key,
        "id" | "object" | "type" | "created" | "livemode" | "api_version" | "account" | "data"
    ) || crate::facts::reads_field(key)
}

/// Deserializes JSON into a [`Value`] with only the members [`kept`] names.
struct Pruned;

impl<'de> DeserializeSeed<'de> for Pruned {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Pruned {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Pruned)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = members.next_key_seed(KeptKey)? {
            match key {
                // A repeated key keeps its last value, as serde_json's own `Value` does.
                Some(key) => {
                    object.insert(key, members.next_value_seed(Pruned)?);
                }
                None => {
                    members.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(object))
    }
}

/// A member name, allocated only when [`kept`].
struct KeptKey;

impl<'de> DeserializeSeed<'de> for KeptKey {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeptKey {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(kept(v).then(|| v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(kept(&v).then_some(v))
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

//! Keyset paging for every list: a page is fetched with one row more than its limit, and the
//! cursor after it is an opaque encoding of the last row's sort key.

use super::error::ApiError;
use base64::Engine;

/// An opaque cursor: base64url of the JSON of the last item's sort key.
pub fn encode_cursor(key: impl serde::Serialize) -> String {
    let json = serde_json::to_vec(&key).expect("sort keys serialize");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

/// The answer to a cursor this API did not make.
pub const CURSOR_MALFORMED: &str = "`cursor` must be a `next_cursor` this API returned, unchanged";

/// Reads a cursor made by [`encode_cursor`]; 400 for anything else.
pub fn decode_cursor<T: serde::de::DeserializeOwned>(cursor: &str) -> Result<T, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or_else(|| ApiError::bad_request(CURSOR_MALFORMED))
}

/// Reads an optional cursor, `start` when absent.
pub fn cursor_or<T: serde::de::DeserializeOwned>(
    cursor: Option<&str>,
    start: T,
) -> Result<T, ApiError> {
    cursor.map_or(Ok(start), decode_cursor)
}

/// Cuts a page fetched with one row more than `limit`: the page, and the cursor after its last
/// item when more rows exist.
pub fn page<T, K: serde::Serialize>(
    mut items: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> K,
) -> (Vec<T>, Option<String>) {
    if items.len() as i64 <= limit {
        return (items, None);
    }
    items.truncate(limit as usize);
    let cursor = items.last().map(|last| encode_cursor(key(last)));
    (items, cursor)
}

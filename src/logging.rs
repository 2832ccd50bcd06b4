//! Log output: text or JSON lines on stderr, one line per event whatever the logged values hold.
//!
//! Logged values come from outside (event IDs, paths, header-derived reasons), so a value must
//! never end a line or forge one: in text logs every control character of every field and span
//! value is escaped (`\n`, `\r`, `\t`, `\u{1b}`...), as are the Unicode line and paragraph
//! separators; JSON logs carry values as JSON strings, whose encoder escapes the same
//! characters. This module owns the subscriber; it never decides what is logged.

use crate::config::LogFormat;
use std::fmt::Write;
use tracing_subscriber::field::MakeExt;

/// Installs the global subscriber (`RUST_LOG` filters, `info` by default) writing to stderr,
/// so a command's stdout is only its result.
pub fn init(format: LogFormat) {
    use std::io::IsTerminal;
    // PostgreSQL NOTICEs ("relation already exists, skipping") are not ours to report.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,tokio_postgres=warn,refinery_core=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.fmt_fields(escaped_fields()).init(),
    }
}

/// The text format's fields: `message`, then `name=value` pairs separated by spaces (strings
/// quoted, as `tracing-subscriber` prints them), each value escaped by [`escape_controls`].
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let raw = format!("{value:?}");
        let text = escape_controls(&raw);
        match field.name() {
            "message" => writer.write_str(&text),
            name => write!(writer, "{name}={text}"),
        }
    })
    .delimited(" ")
}

/// `text` with every control character (C0, DEL, C1) and U+2028/U+2029 written as a Rust
/// escape: `\n`, `\r`, `\t`, else `\u{hex}`. Other characters, backslashes included, pass as
/// they are (a `Debug`-formatted string already escaped its own).
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    let needs = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}';
    if !text.chars().any(needs) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn control_characters_are_escaped_and_others_kept() {
        assert_eq!(escape_controls("evt_1"), "evt_1");
        assert_eq!(
            escape_controls("evt_1\n2025-01-01 INFO forged\r\t\u{1b}[31m\u{85}\u{2028}é"),
            "evt_1\\n2025-01-01 INFO forged\\r\\t\\u{1b}[31m\\u{85}\\u{2028}é"
        );
    }
}

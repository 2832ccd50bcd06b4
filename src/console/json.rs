//! An indenting pretty-printer for JSON text that keeps every byte of the tokens as received:
//! member order, number spelling (`1.0`, `1e3`, 30-digit integers), string escapes. Parsing
//! into `serde_json::Value` and printing back would sort members and round numbers, and the
//! console promises the body exactly as Stripe sent it, only indented.
//!
//! It only moves whitespace: outside strings it drops the sender's whitespace and adds
//! newlines and two-space indents after `{`, `[` and `,` and before `}` and `]`. Text that is
//! not JSON comes out re-spaced but otherwise unchanged (the raw view shows the bytes).

/// Spaces per nesting level.
const INDENT: &str = "  ";

/// `text` indented, tokens unchanged.
pub fn pretty(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    let mut depth = 0usize;
    let mut chars = text.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(INDENT);
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push('"');
                while let Some(s) = chars.next() {
                    out.push(s);
                    match s {
                        '\\' => out.extend(chars.next()),
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '{' | '[' => {
                out.push(c);
                let close = if c == '{' { '}' } else { ']' };
                while chars.peek().is_some_and(|n| n.is_whitespace()) {
                    chars.next();
                }
                if chars.peek() == Some(&close) {
                    out.push(close);
                    chars.next();
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::pretty;

    #[test]
    fn indents_without_touching_tokens() {
        let raw =
            r#"{"b":1.0,"a":[1e3, 123456789012345678901234567890],"s":"x\"{,}\\","e":{},"l":[ ]}"#;
        let expected = "{\n  \"b\": 1.0,\n  \"a\": [\n    1e3,\n    123456789012345678901234567890\n  ],\n  \"s\": \"x\\\"{,}\\\\\",\n  \"e\": {},\n  \"l\": []\n}";
        assert_eq!(pretty(raw), expected);
        let reparsed: serde_json::Value = serde_json::from_str(&pretty(raw)).unwrap();
        assert_eq!(
            reparsed,
            serde_json::from_str::<serde_json::Value>(raw).unwrap()
        );
    }

    #[test]
    fn whitespace_inside_strings_stays() {
        assert_eq!(
            pretty("{ \"a b\" :\n \"c  d\" }"),
            "{\n  \"a b\": \"c  d\"\n}"
        );
    }
}

//! How text a client sent appears in error messages and log lines: quoted, escaped, and cut
//! to a short prefix. An id of megabytes echoed whole breaks the reply (gRPC carries the
//! message in a header, which clients cap at 8-16 KB) and floods the log; control characters
//! echoed raw forge log lines.

use std::borrow::Cow;

/// The most characters of client text that a message repeats.
pub const MAX_ECHOED_CHARS: usize = 40;

/// `input` as a message may show it: Rust-escaped in double quotes, its first
/// [`MAX_ECHOED_CHARS`] characters only, and when cut, followed by its full length.
pub fn quote(input: &str) -> String {
    let total = input.chars().count();
    let shown: String = input.chars().take(MAX_ECHOED_CHARS).collect();
    if total > MAX_ECHOED_CHARS {
        format!("{:?}… ({total} characters)", shown)
    } else {
        format!("{shown:?}")
    }
}

/// `message` cut to its first `max_bytes` bytes (back to a character boundary) and marked
/// with "…" when cut; whole otherwise.
pub fn truncate(message: &str, max_bytes: usize) -> Cow<'_, str> {
    if message.len() <= max_bytes {
        return Cow::Borrowed(message);
    }
    let mut end = max_bytes;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &message[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_quoted_whole() {
        assert_eq!(quote("artist-1"), "\"artist-1\"");
        assert_eq!(quote("a\nb\u{1b}[31m"), "\"a\\nb\\u{1b}[31m\"");
    }

    #[test]
    fn long_text_is_cut_and_its_length_said() {
        let long = "x".repeat(16_300);
        let quoted = quote(&long);
        assert_eq!(
            quoted,
            format!("\"{}\"… (16300 characters)", "x".repeat(40))
        );
        let wide = "é".repeat(41);
        assert!(quote(&wide).ends_with("(41 characters)"));
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("héllo", 3), "hé…");
        assert_eq!(truncate("hello", 10), "hello");
    }
}

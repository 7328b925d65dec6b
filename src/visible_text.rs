//! Text that people read: consent pages show client names, operators read
//! logs. Characters that are invisible or change how the rest of a line
//! renders (a right-to-left override turns `"App\u{202e}gnp.exe"` into
//! another name, a newline forges a log line) must not reach them raw.

/// Unicode general categories Cc (controls), Cf (format: bidi embeddings,
/// overrides and isolates, zero-width characters, soft hyphen, tags), Zl and
/// Zp (line and paragraph separators); Unicode 16, spelled out (no table crate).
pub fn is_hidden_or_control(c: char) -> bool {
    c.is_control()
        || matches!(
            u32::from(c),
            0x00AD
                | 0x0600..=0x0605
                | 0x061C
                | 0x06DD
                | 0x070F
                | 0x0890..=0x0891
                | 0x08E2
                | 0x180E
                | 0x200B..=0x200F
                | 0x2028..=0x202E
                | 0x2060..=0x2064
                | 0x2066..=0x206F
                | 0xFEFF
                | 0xFFF9..=0xFFFB
                | 0x110BD
                | 0x110CD
                | 0x13430..=0x1343F
                | 0x1BCA0..=0x1BCA3
                | 0x1D173..=0x1D17A
                | 0xE0001
                | 0xE0020..=0xE007F
        )
}

/// No character of [`is_hidden_or_control`].
pub fn is_visible_text(text: &str) -> bool {
    !text.chars().any(is_hidden_or_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_zero_width_separators_and_controls_are_hidden_or_control() {
        for c in [
            '\u{202E}',
            '\u{2066}',
            '\u{200B}',
            '\u{FEFF}',
            '\u{2028}',
            '\u{E0041}',
            '\n',
            '\u{1b}',
        ] {
            assert!(is_hidden_or_control(c), "{c:?}");
        }
        for c in ['a', 'é', '中', ' ', '-', '\u{2030}'] {
            assert!(!is_hidden_or_control(c), "{c:?}");
        }
    }
}

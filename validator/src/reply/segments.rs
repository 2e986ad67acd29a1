//! How long a reply is as the phone network counts it. A text of GSM-7 characters
//! (3GPP TS 23.038's basic set, the extension table counting two) fits 160 in one
//! segment and 153 per part of a longer one; anything else, Cyrillic included, goes
//! as UCS-2: 70 in one segment, 67 per part, counted in UTF-16 code units (an emoji
//! is two). Our replies are Russian, so UCS-2; and the notifier sends through Kannel
//! with `coding=2` whatever the text, so the UCS-2 limits are the ones that bind.

/// The text's encoding on the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

impl Encoding {
    pub fn of(text: &str) -> Self {
        if text.chars().all(|c| gsm7_septets(c).is_some()) {
            Encoding::Gsm7
        } else {
            Encoding::Ucs2
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "GSM-7",
            Encoding::Ucs2 => "UCS-2",
        }
    }
}

/// Characters in one UCS-2 segment; concatenated parts carry 67 each.
pub const UCS2_ONE_SEGMENT: usize = 70;
const UCS2_PER_PART: usize = 67;
const GSM7_ONE_SEGMENT: usize = 160;
const GSM7_PER_PART: usize = 153;

/// Length in the units its encoding counts (septets, or UTF-16 code units).
pub fn length(text: &str) -> usize {
    match Encoding::of(text) {
        Encoding::Gsm7 => text.chars().filter_map(gsm7_septets).sum(),
        Encoding::Ucs2 => ucs2_len(text),
    }
}

/// UTF-16 code units: what a UCS-2 segment holds 70 of.
pub fn ucs2_len(text: &str) -> usize {
    text.encode_utf16().count()
}

/// SMS segments the text takes.
pub fn segments(text: &str) -> usize {
    let (one, per_part) = match Encoding::of(text) {
        Encoding::Gsm7 => (GSM7_ONE_SEGMENT, GSM7_PER_PART),
        Encoding::Ucs2 => (UCS2_ONE_SEGMENT, UCS2_PER_PART),
    };
    let len = length(text);
    if len <= one {
        1
    } else {
        len.div_ceil(per_part)
    }
}

/// Septets of a GSM-7 character: 1 in the basic set, 2 through the escape to the
/// extension table, `None` if GSM-7 cannot carry it.
fn gsm7_septets(c: char) -> Option<usize> {
    const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                         ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
    const EXTENSION: &str = "\u{c}^{}\\[~]|€";
    if BASIC.contains(c) {
        Some(1)
    } else if EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm7_and_ucs2_limits() {
        assert_eq!(Encoding::of("1000001 45100"), Encoding::Gsm7);
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"a".repeat(306)), 2);
        assert_eq!(segments(&"a".repeat(307)), 3);
        assert_eq!(length("€[]"), 6, "extension characters take two septets");
        assert_eq!(segments(&"€".repeat(80)), 1);
        assert_eq!(segments(&"€".repeat(81)), 2);
        assert_eq!(Encoding::of("Пример"), Encoding::Ucs2);
        assert_eq!(segments(&"я".repeat(70)), 1);
        assert_eq!(segments(&"я".repeat(71)), 2, "Kannel sends 67 + 4");
        assert_eq!(segments(&"я".repeat(134)), 2);
        assert_eq!(segments(&"я".repeat(135)), 3);
        assert_eq!(length("😀"), 2, "outside the BMP: a surrogate pair");
        assert_eq!(segments(&format!("{}😀", "a".repeat(68))), 1);
        assert_eq!(segments(&format!("{}😀", "a".repeat(69))), 2);
    }
}

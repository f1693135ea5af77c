//! MIME encoding for the pre-encoded builder: bodies in quoted-printable (the
//! `quoted_printable` crate) cut into pieces at the personal slots, and header
//! values kept ASCII with RFC 2047 encoded-words and folded at spaces (the
//! `email-encoding` crate, what lettre itself encodes headers with).

use std::borrow::Cow;
use std::fmt::Write as _;

use email_encoding::headers::rfc2047;
use email_encoding::headers::writer::EmailWriter;

use crate::render::Slot;

/// Appends `input` in quoted-printable (RFC 2045 6.7) from column 0: line breaks
/// (`\n` or `\r\n`) become CRLF, every line is at most 76 columns including the
/// `=` of a soft break, `=`, controls, bytes over 126 and a space or tab before a
/// line break or at the end are encoded. Returns the column the output ends at.
pub(super) fn qp_encode(input: &[u8], out: &mut Vec<u8>) -> usize {
    // The crate reads CRLF as the text's line break and would encode a bare LF.
    let encoded = quoted_printable::encode(crlf(input));
    out.extend_from_slice(&encoded);
    match memchr::memmem::rfind(&encoded, b"\r\n") {
        Some(at) => encoded.len() - at - 2,
        None => encoded.len(),
    }
}

/// `input` with every bare LF made CRLF (a CR alone stays, and is encoded).
fn crlf(input: &[u8]) -> Cow<'_, [u8]> {
    if !input.contains(&b'\n') {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len() + input.len() / 16);
    for (i, &c) in input.iter().enumerate() {
        if c == b'\n' && (i == 0 || input[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// A body in quoted-printable pieces: `literals[0] slots[0] literals[1] …`.
/// Every piece is encoded from column 0; a soft line break joins two pieces
/// when the first does not end on a line break, so no line grows past 76.
#[derive(Debug, Clone)]
pub(super) struct EncodedBody {
    /// (encoded bytes, ends at column 0)
    literals: Vec<(Vec<u8>, bool)>,
    slots: Vec<Slot>,
    /// Bytes of all the literals.
    pub(super) len: usize,
}

impl EncodedBody {
    pub(super) fn new((literals, slots): (&[String], &[Slot])) -> EncodedBody {
        let literals: Vec<(Vec<u8>, bool)> = literals
            .iter()
            .map(|l| {
                let mut out = Vec::with_capacity(l.len() + l.len() / 8);
                let col = qp_encode(l.as_bytes(), &mut out);
                (out, col == 0)
            })
            .collect();
        let len = literals.iter().map(|(l, _)| l.len() + 3).sum();
        EncodedBody {
            literals,
            slots: slots.to_vec(),
            len,
        }
    }

    pub(super) fn write(&self, greeting: &[u8], unsubscribe: &[u8], out: &mut Vec<u8>) {
        let mut at_col0 = true;
        let mut piece = |bytes: &[u8], ends_col0: bool, out: &mut Vec<u8>| {
            if bytes.is_empty() {
                return;
            }
            if !at_col0 {
                out.extend_from_slice(b"=\r\n");
            }
            out.extend_from_slice(bytes);
            at_col0 = ends_col0;
        };
        let mut scratch = Vec::with_capacity(2 * (greeting.len() + unsubscribe.len()) + 16);
        for (i, (lit, ends_col0)) in self.literals.iter().enumerate() {
            piece(lit, *ends_col0, out);
            let value = match self.slots.get(i) {
                Some(Slot::Greeting) => greeting,
                Some(Slot::Unsubscribe) => unsubscribe,
                None => continue,
            };
            scratch.clear();
            let col = qp_encode(value, &mut scratch);
            piece(&scratch, col == 0, out);
        }
        // The delimiter's own CRLF: a body ending on a line break keeps it.
        out.extend_from_slice(b"\r\n");
    }
}

/// RFC 2047 B encoded-words for `text`, separated by spaces (fold points), each
/// holding whole UTF-8 characters and short enough for a folded line, the first
/// one after the header's name included.
pub(super) fn encoded_words(text: &str, out: &mut String) {
    /// Where the first word starts: after the longest header name it goes in, `Reply-To: `.
    const AFTER_NAME: usize = "Reply-To: ".len();
    let mut words = String::with_capacity(text.len() * 2);
    {
        let mut w = EmailWriter::new(&mut words, AFTER_NAME, 0, false);
        rfc2047::encode(text, &mut w).expect("writing to a String cannot fail");
    }
    // The encoder folds as it goes; the value is folded again where it lands.
    out.extend(words.split("\r\n"));
}

/// True when `text` can go in a header as it is: printable ASCII, no
/// encoded-word look-alike, no word too long to fold.
pub(super) fn header_safe(text: &str) -> bool {
    text.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !text.contains("=?")
        && text.split(' ').all(|w| w.len() <= 60)
}

/// A display name as an RFC 5322 phrase: atoms, a quoted string, or encoded-words.
fn push_phrase(name: &str, out: &mut String) {
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~ ".contains(c);
    if !header_safe(name) {
        encoded_words(name, out);
    } else if name.chars().all(atext) {
        out.push_str(name);
    } else {
        out.push('"');
        for c in name.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
}

/// `List-Id: Name <id>`: the phrase as atoms, a quoted string, or RFC 2047
/// encoded-words (a name with an accent): ASCII either way, for both builders.
pub(super) fn list_id_value(name: &str, id: &str) -> String {
    let mut v = String::with_capacity(name.len() * 2 + id.len() + 3);
    push_phrase(name.trim(), &mut v);
    v.push_str(" <");
    v.push_str(id);
    v.push('>');
    v
}

/// `Name <address>` (or the bare address without a name).
pub(super) fn mailbox_value(name: Option<&str>, address: &str) -> String {
    let mut v = String::with_capacity(address.len() + 40);
    match name.map(str::trim).filter(|n| !n.is_empty()) {
        Some(n) => {
            push_phrase(n, &mut v);
            v.push_str(" <");
            v.push_str(address);
            v.push('>');
        }
        None => v.push_str(address),
    }
    v
}

/// Appends `name: value` and CRLF, the ASCII `value` folded at spaces so that
/// lines stay within 76 columns where its words allow it (a word longer than a
/// line keeps a line of its own; never a line of blanks only).
pub(super) fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    let mut line = String::with_capacity(name.len() + value.len() + 8);
    line.push_str(name);
    line.push_str(": ");
    {
        let mut w = EmailWriter::new(&mut line, name.len() + 2, 0, false);
        w.folding()
            .write_str(value)
            .expect("writing to a String cannot fail");
    }
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    #[test]
    fn list_id_phrase_is_quoted_when_it_holds_specials() {
        assert_eq!(list_id_value("Le Matin", "x.y"), "Le Matin <x.y>");
        assert_eq!(list_id_value("News, Daily", "x.y"), "\"News, Daily\" <x.y>");
    }

    /// A quoted-printable body alone, decoded by mail-parser.
    fn qp_decoded(qp: &[u8]) -> String {
        let mut raw = b"Content-Type: text/plain; charset=utf-8\r\n\
            Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            .to_vec();
        raw.extend_from_slice(qp);
        let m = MessageParser::default().parse(&raw).unwrap();
        m.body_text(0).unwrap().into_owned()
    }

    #[test]
    fn quoted_printable_round_trips_the_hard_cases_within_76_columns() {
        let cases = [
            "".to_string(),
            "a = b\n".into(),
            "trailing space \nand tab\t\nat the end ".into(),
            "crlf\r\nbare cr\ralone\n\n\nblank lines".into(),
            ".leading dot\n..two\n".into(),
            "é".repeat(200),
            "x".repeat(75) + "=" + &"y".repeat(300),
            format!("{} \n{}\t", "w".repeat(74), "v".repeat(75)),
            "Zoë Ğüñ 日本語 🙂 \u{0} \u{7f} ~".into(),
        ];
        for case in cases {
            let mut out = Vec::new();
            let col = qp_encode(case.as_bytes(), &mut out);
            let text = std::str::from_utf8(&out).unwrap();
            assert!(text.is_ascii());
            for line in text.split("\r\n") {
                assert!(line.len() <= 76, "{line:?} is {} long", line.len());
                assert!(!line.ends_with([' ', '\t']), "trailing blank in {line:?}");
            }
            assert!(
                !text.replace("\r\n", "").contains('\n'),
                "bare LF in {text:?}"
            );
            assert_eq!(col, text.rsplit("\r\n").next().unwrap().len());
            let expected = case.replace("\r\n", "\n");
            assert_eq!(qp_decoded(&out).replace("\r\n", "\n"), expected, "{case:?}");
        }
    }

    #[test]
    fn headers_fold_at_spaces_within_76_columns_and_unfold_to_the_value() {
        let mut long = String::new();
        encoded_words(&"Zoë Ğüñ 日本語 ".repeat(12), &mut long);
        let values = [
            "short".to_string(),
            long,
            format!(
                "<https://news.example.com/{}>, <mailto:x@y>",
                "a".repeat(90)
            ),
            "word ".repeat(40).trim_end().to_string(),
        ];
        for value in values {
            let mut out = Vec::new();
            push_header(&mut out, "Subject", &value);
            let text = std::str::from_utf8(&out).unwrap();
            assert!(text.ends_with("\r\n"));
            let lines: Vec<&str> = text.trim_end_matches("\r\n").split("\r\n").collect();
            for (i, line) in lines.iter().enumerate() {
                assert!(!line.trim().is_empty(), "blank line in {text:?}");
                assert_eq!(i > 0, line.starts_with(' '), "{line:?}");
                // A word longer than a line has a line of its own (after the name).
                let words = line.trim_start().split(' ').count();
                let one_word = words == 1 || (i == 0 && words == 2);
                assert!(line.len() <= 76 || one_word, "{line:?} is too long");
            }
            assert_eq!(lines.concat(), format!("Subject: {value}"));
        }
    }
}

//! HTML (or plain text) of unknown quality → clean plain text, and teasers cut
//! at a word.

use crate::markup::{self, Token};

/// Elements whose content is never text for a reader.
const HIDDEN_ELEMENTS: &[&str] = &[
    "script", "style", "noscript", "template", "iframe", "object", "svg", "math", "head", "title",
    "select", "textarea",
];

/// Elements that separate words (a space is emitted in their place).
const BLOCK_ELEMENTS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "br",
    "dd",
    "div",
    "dl",
    "dt",
    "figcaption",
    "figure",
    "footer",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "img",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "table",
    "td",
    "th",
    "tr",
    "ul",
];

/// HTML (or plain text) → one clean line of plain text: tags stripped, hidden
/// elements dropped with their content, entities decoded, control and invisible
/// formatting characters removed, whitespace folded to single spaces.
pub fn clean_text(input: &str) -> String {
    let stripped = strip_tags(input);
    let decoded = html_escape::decode_html_entities(&stripped).into_owned();
    // Feeds that escape their HTML twice leave tags behind after one decoding.
    let decoded = if looks_like_markup(&decoded) {
        strip_tags(&decoded)
    } else {
        decoded
    };
    fold_whitespace(&decoded)
}

/// True when `s` holds something a browser would read as a tag or comment.
fn looks_like_markup(s: &str) -> bool {
    let b = s.as_bytes();
    b.windows(2)
        .any(|w| w[0] == b'<' && (w[1].is_ascii_alphabetic() || w[1] == b'/' || w[1] == b'!'))
}

/// Removes tags and comments; drops the content of [`HIDDEN_ELEMENTS`]; puts a
/// space where a block element was. Entities are left alone. A `<` that does not
/// open a tag ("a < b") is kept.
pub fn strip_tags(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    let mut tokens = markup::tokens(input);
    while let Some(token) = tokens.next() {
        match token {
            Token::Text(text) => out.push_str(text),
            Token::Comment => out.push(' '),
            Token::Tag(tag) => {
                let name = tag.name.as_str();
                if !tag.closing && HIDDEN_ELEMENTS.contains(&name) {
                    if !tag.self_closing {
                        tokens.skip_element(name);
                    }
                    out.push(' ');
                } else if BLOCK_ELEMENTS.contains(&name) {
                    out.push(' ');
                }
            }
        }
    }
    out
}

/// Removes control characters (CR and LF included) and invisible formatting
/// characters (zero-width, bidi overrides), then folds whitespace runs to one space.
pub fn fold_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.chars() {
        if is_invisible(c) {
            continue;
        }
        if c.is_whitespace() || c.is_control() {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(c);
    }
    out
}

fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' |
        '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{FFFE}' | '\u{FFFF}')
}

/// Cuts `text` to at most `max` characters (the "…" included) at a word boundary,
/// the way a news page cuts its teasers. Short texts are returned unchanged.
pub fn cut_at_word(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let limit = max.saturating_sub(1).max(1);
    let end = text
        .char_indices()
        .nth(limit)
        .map(|(i, _)| i)
        .unwrap_or(text.len());
    let head = &text[..end];
    // Cut at the last space if it leaves a reasonable amount of text; a single
    // endless "word" (a URL, a hostile blob) is cut where it stands.
    let cut = match head.rfind(' ') {
        Some(sp) if head[..sp].chars().count() >= limit / 2 => &head[..sp],
        _ => head,
    };
    let cut = cut.trim_end_matches(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                ',' | ';' | ':' | '-' | '–' | '—' | '(' | '«' | '\'' | '’'
            )
    });
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_and_style_contents_are_dropped_not_shown() {
        let t =
            clean_text("Avant<script>alert('x')</script> milieu <STYLE>p{color:red}</STYLE>après");
        assert_eq!(t, "Avant milieu après");
    }

    #[test]
    fn event_handlers_and_tags_vanish() {
        let t = clean_text(
            r#"<img src=x onerror="alert(1)">Titre <b>gras</b> <a href="javascript:alert(1)">lien</a>"#,
        );
        assert_eq!(t, "Titre gras lien");
    }

    #[test]
    fn quoted_greater_than_inside_an_attribute_does_not_end_the_tag() {
        assert_eq!(
            clean_text(r#"<a title="a > b" href="/">texte</a>"#),
            "texte"
        );
    }

    #[test]
    fn entities_are_decoded_once_and_double_escaped_markup_is_stripped() {
        assert_eq!(
            clean_text("Caf&eacute; &amp; th&#233; &lt; 3"),
            "Café & thé < 3"
        );
        assert_eq!(
            clean_text("&lt;script&gt;alert(1)&lt;/script&gt;Bonjour"),
            "Bonjour"
        );
    }

    #[test]
    fn control_characters_crlf_included_become_single_spaces() {
        let t = clean_text("Une\r\nligne\tbrisée\u{0}\u{7}  ici\u{202E}\u{200B}");
        assert_eq!(t, "Une ligne brisée ici");
        assert!(!t.chars().any(|c| c.is_control()));
    }

    #[test]
    fn comments_and_unterminated_hidden_elements_are_dropped() {
        assert_eq!(clean_text("a<!-- secret -->b"), "a b");
        assert_eq!(clean_text("visible<script>never closed"), "visible");
        assert_eq!(clean_text("x <p>y</p><br/>z"), "x y z");
    }

    #[test]
    fn inline_tags_do_not_split_words_but_blocks_do() {
        assert_eq!(clean_text("Bon<i>jour</i>"), "Bonjour");
        assert_eq!(clean_text("<p>un</p><p>deux</p>"), "un deux");
    }

    #[test]
    fn long_summaries_are_cut_at_a_word_boundary_with_an_ellipsis() {
        let text = "mot ".repeat(100);
        let t = cut_at_word(text.trim(), 220);
        assert!(t.ends_with("mot…"), "{t}");
        assert!(t.chars().count() <= 220);
        assert_eq!(cut_at_word("court", 220), "court");
        let blob = "x".repeat(1000);
        assert_eq!(cut_at_word(&blob, 10).chars().count(), 10);
    }
}

//! The pre-send check: rules a message must pass before it goes to anyone
//! (`digestif lint`, and `send` refuses an issue that breaks one).

use std::fmt;

use crate::markup::{self, Tag, Token};

/// Gmail clips an HTML body above this many bytes.
pub const MAX_HTML_BYTES: usize = 102 * 1024;
/// RFC 5322 §2.1.1: a line is at most 998 characters, CRLF excluded.
pub const MAX_LINE: usize = 998;
/// Headers every issue carries.
pub const REQUIRED_HEADERS: [&str; 9] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "MIME-Version",
];

/// Which rule a message breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// The HTML is over 102 KB: Gmail would clip it, hiding the footer and its
    /// unsubscribe link.
    TooLarge,
    /// A line over 998 characters.
    LineTooLong,
    /// A required header is missing.
    MissingHeader,
    /// The text/plain part is empty.
    EmptyText,
    /// `<html>` has no `lang`.
    NoLang,
    /// No hidden preheader.
    NoPreheader,
    /// An `<img>` without `alt`.
    ImageWithoutAlt,
}

impl Rule {
    /// A stable name for logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Rule::TooLarge => "too-large",
            Rule::LineTooLong => "line-too-long",
            Rule::MissingHeader => "missing-header",
            Rule::EmptyText => "empty-text",
            Rule::NoLang => "no-lang",
            Rule::NoPreheader => "no-preheader",
            Rule::ImageWithoutAlt => "image-without-alt",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One broken rule, with a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintIssue {
    pub rule: Rule,
    pub message: String,
}

impl fmt::Display for LintIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.message)
    }
}

fn issue(rule: Rule, message: String) -> LintIssue {
    LintIssue { rule, message }
}

/// Checks a message. `headers` may be empty (bodies only: the header rule is then
/// skipped); `raw_size` is the size of the whole encoded message if known (0 if
/// not), reported alongside the HTML's size.
pub fn lint_message(
    html: &str,
    text: &str,
    headers: &[(String, String)],
    raw_size: usize,
) -> Vec<LintIssue> {
    let mut out = Vec::new();
    if html.len() > MAX_HTML_BYTES {
        let raw = if raw_size > 0 {
            format!(" (whole message: {raw_size} bytes)")
        } else {
            String::new()
        };
        out.push(issue(
            Rule::TooLarge,
            format!(
                "the HTML is {} bytes{raw}, over Gmail's {MAX_HTML_BYTES}-byte limit: Gmail would clip it and hide the unsubscribe link; pick fewer stories",
                html.len()
            ),
        ));
    }
    for (part, body) in [("HTML", html), ("text", text)] {
        if let Some((n, len)) = body
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l).len())
            .enumerate()
            .find(|(_, len)| *len > MAX_LINE)
        {
            out.push(issue(
                Rule::LineTooLong,
                format!(
                    "line {} of the {part} part is {len} characters long; SMTP allows {MAX_LINE}",
                    n + 1
                ),
            ));
        }
    }
    if !headers.is_empty() {
        for name in REQUIRED_HEADERS {
            let present = headers
                .iter()
                .any(|(k, v)| k.trim().eq_ignore_ascii_case(name) && !v.trim().is_empty());
            if !present {
                out.push(issue(
                    Rule::MissingHeader,
                    format!("the message has no {name} header"),
                ));
            }
        }
    }
    if text.trim().is_empty() {
        out.push(issue(
            Rule::EmptyText,
            "the text/plain part is empty; clients that show plain text would show nothing".into(),
        ));
    }
    let tags = tags(html);
    match tags.iter().find(|t| t.name == "html") {
        Some(t) if t.attr("lang").is_some_and(|l| !l.trim().is_empty()) => {}
        _ => out.push(issue(
            Rule::NoLang,
            "<html> has no lang attribute; screen readers would guess the language".into(),
        )),
    }
    if !has_preheader(html, &tags) {
        out.push(issue(
            Rule::NoPreheader,
            "no hidden preheader (an element with display:none holding text, at the top of <body>); inboxes would show the body's first words instead".into(),
        ));
    }
    for t in tags.iter().filter(|t| t.name == "img") {
        if t.attr("alt").is_none() {
            let src = t.attr("src").unwrap_or("?");
            out.push(issue(
                Rule::ImageWithoutAlt,
                format!("<img src=\"{src}\"> has no alt text"),
            ));
        }
    }
    out
}

/// The opening tags of `html`, declarations, comments and closing tags left out.
fn tags(html: &str) -> Vec<Tag<'_>> {
    markup::tokens(html)
        .filter_map(|t| match t {
            Token::Tag(t) if !t.closing && !t.name.is_empty() => Some(t),
            _ => None,
        })
        .collect()
}

/// A hidden element (display:none) inside <body> whose text is not empty.
fn has_preheader(html: &str, tags: &[Tag]) -> bool {
    let mut in_body = false;
    for t in tags {
        if t.name == "body" {
            in_body = true;
            continue;
        }
        if !in_body {
            continue;
        }
        let hidden = t.attr("style").is_some_and(|s| {
            s.to_ascii_lowercase()
                .replace(' ', "")
                .contains("display:none")
        });
        if hidden {
            let rest = &html[t.end..];
            let text = &rest[..rest.find('<').unwrap_or(rest.len())];
            let visible = text
                .replace("&zwnj;", "")
                .replace("&nbsp;", "")
                .replace("&#847;", "");
            if !visible.trim().is_empty() {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD_HTML: &str = "<!DOCTYPE html>\n<html lang=\"fr\">\n<head><title>x</title></head>\n<body>\n<div style=\"display: none; max-height:0\">Le budget 2027 et l'essentiel</div>\n<img src=\"https://e.com/logo.png\" alt=\"L'Essentiel\">\n<p>Bonjour</p>\n</body></html>";
    const GOOD_TEXT: &str = "Bonjour,\n\nLe budget 2027.\n";

    fn headers() -> Vec<(String, String)> {
        REQUIRED_HEADERS
            .iter()
            .map(|h| (h.to_string(), "x".to_string()))
            .collect()
    }

    fn rules(issues: &[LintIssue]) -> Vec<Rule> {
        issues.iter().map(|i| i.rule).collect()
    }

    #[test]
    fn a_good_message_passes_every_rule() {
        let issues = lint_message(GOOD_HTML, GOOD_TEXT, &headers(), 5000);
        assert!(issues.is_empty(), "{issues:?}");
    }

    #[test]
    fn html_over_102_kb_is_too_large() {
        let pad = format!("<p>{}</p>\n", "a ".repeat(400));
        let mut html = GOOD_HTML.replace("</body>", "");
        while html.len() <= MAX_HTML_BYTES {
            html.push_str(&pad);
        }
        let issues = lint_message(&html, GOOD_TEXT, &[], 0);
        assert_eq!(rules(&issues), vec![Rule::TooLarge]);
        assert!(issues[0].message.contains("Gmail"));
        let just_under = &html[..MAX_HTML_BYTES];
        assert!(lint_message(just_under, GOOD_TEXT, &[], 0).is_empty());
    }

    #[test]
    fn a_line_over_998_characters_is_reported_in_either_body() {
        let long = "x".repeat(999);
        let html = GOOD_HTML.replace("<p>Bonjour</p>", &format!("<p>{long}</p>"));
        let issues = lint_message(&html, GOOD_TEXT, &[], 0);
        assert_eq!(rules(&issues), vec![Rule::LineTooLong]);
        assert!(issues[0].message.contains("HTML"), "{}", issues[0]);
        let text = format!("{GOOD_TEXT}{long}\n");
        let issues = lint_message(GOOD_HTML, &text, &[], 0);
        assert_eq!(rules(&issues), vec![Rule::LineTooLong]);
        assert!(
            issues[0].message.contains("line 4 of the text"),
            "{}",
            issues[0]
        );
        let exactly = format!("{GOOD_TEXT}{}\r\n", "x".repeat(998));
        assert!(lint_message(GOOD_HTML, &exactly, &[], 0).is_empty());
    }

    #[test]
    fn each_missing_header_is_named() {
        let mut h = headers();
        h.retain(|(k, _)| k != "List-Unsubscribe-Post" && k != "Date");
        let issues = lint_message(GOOD_HTML, GOOD_TEXT, &h, 0);
        assert_eq!(
            rules(&issues),
            vec![Rule::MissingHeader, Rule::MissingHeader]
        );
        assert!(issues[0].message.contains("Date"));
        assert!(issues[1].message.contains("List-Unsubscribe-Post"));
    }

    #[test]
    fn headers_match_case_insensitively_and_empty_ones_count_as_missing() {
        let mut h: Vec<(String, String)> = headers()
            .into_iter()
            .map(|(k, v)| (k.to_lowercase(), v))
            .collect();
        assert!(lint_message(GOOD_HTML, GOOD_TEXT, &h, 0).is_empty());
        h[0].1 = "  ".into();
        assert_eq!(
            rules(&lint_message(GOOD_HTML, GOOD_TEXT, &h, 0)),
            vec![Rule::MissingHeader]
        );
    }

    #[test]
    fn an_empty_text_part_is_reported() {
        let issues = lint_message(GOOD_HTML, " \r\n ", &[], 0);
        assert_eq!(rules(&issues), vec![Rule::EmptyText]);
    }

    #[test]
    fn html_without_lang_is_reported() {
        let html = GOOD_HTML.replace("<html lang=\"fr\">", "<html>");
        assert_eq!(
            rules(&lint_message(&html, GOOD_TEXT, &[], 0)),
            vec![Rule::NoLang]
        );
        let empty = GOOD_HTML.replace("lang=\"fr\"", "lang=\"\"");
        assert_eq!(
            rules(&lint_message(&empty, GOOD_TEXT, &[], 0)),
            vec![Rule::NoLang]
        );
    }

    #[test]
    fn a_message_without_a_hidden_preheader_is_reported() {
        let html = GOOD_HTML.replace("display: none; ", "");
        assert_eq!(
            rules(&lint_message(&html, GOOD_TEXT, &[], 0)),
            vec![Rule::NoPreheader]
        );
        // Padding alone is not a preheader.
        let padding =
            GOOD_HTML.replace("Le budget 2027 et l'essentiel", "&zwnj;&nbsp;&zwnj;&nbsp;");
        assert_eq!(
            rules(&lint_message(&padding, GOOD_TEXT, &[], 0)),
            vec![Rule::NoPreheader]
        );
    }

    #[test]
    fn an_image_without_alt_is_reported_and_empty_alt_is_accepted() {
        let html = GOOD_HTML.replace(" alt=\"L'Essentiel\"", "");
        let issues = lint_message(&html, GOOD_TEXT, &[], 0);
        assert_eq!(rules(&issues), vec![Rule::ImageWithoutAlt]);
        assert!(issues[0].message.contains("https://e.com/logo.png"));
        // alt="" is the right markup for a decorative image.
        let decorative = GOOD_HTML.replace("alt=\"L'Essentiel\"", "alt=\"\"");
        assert!(lint_message(&decorative, GOOD_TEXT, &[], 0).is_empty());
        // An "alt" inside another attribute's value is not an alt attribute.
        let tricky = GOOD_HTML.replace(" alt=\"L'Essentiel\"", " title=\"alt=x\"");
        assert_eq!(
            rules(&lint_message(&tricky, GOOD_TEXT, &[], 0)),
            vec![Rule::ImageWithoutAlt]
        );
    }

    #[test]
    fn rules_have_stable_names() {
        assert_eq!(Rule::ImageWithoutAlt.name(), "image-without-alt");
        let i = issue(Rule::NoLang, "m".into());
        assert_eq!(i.to_string(), "no-lang: m");
    }
}

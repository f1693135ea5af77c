//! The plain-text twin: the same sections as the HTML, wrapped at 78 columns, links
//! as numbered references listed at the end.

use unicode_segmentation::UnicodeSegmentation;

use super::assets::Strings;
use super::html::Ctx;
use super::{is_http_url, SLOT_GREETING, SLOT_UNSUBSCRIBE};
use crate::domain::Story;

/// Lines are at most this many columns, except a URL that can't be broken.
pub const WIDTH: usize = 78;

fn columns(s: &str) -> usize {
    s.graphemes(true).count()
}

/// The words of `text`, with French high punctuation kept on its word's line:
/// "lecture :" and "« Oui »" are never broken at their spaces.
fn words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut open_quote = false;
    for w in text.split_whitespace() {
        let trailing = w.chars().all(|c| "!?:;»".contains(c));
        match out.last_mut() {
            Some(last) if trailing || open_quote => {
                last.push(' ');
                last.push_str(w);
            }
            _ => out.push(w.to_string()),
        }
        open_quote = w == "«";
    }
    out
}

/// Wraps `text` at `width` columns, breaking between words; a word longer than the
/// width (a URL) stands alone on its line.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut len = 0;
    for word in words(text) {
        let word = word.as_str();
        let w = columns(word);
        if len > 0 && len + 1 + w > width {
            lines.push(std::mem::take(&mut line));
            len = 0;
        }
        if len > 0 {
            line.push(' ');
            len += 1;
        }
        line.push_str(word);
        len += w;
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn push_wrapped(out: &mut String, text: &str) {
    for l in wrap(text, WIDTH) {
        out.push_str(&l);
        out.push('\n');
    }
}

/// `[n] url` on one line when it fits, else the URL alone on the next line.
fn push_reference(out: &mut String, n: usize, url: &str) {
    let label = format!("[{n}]");
    if columns(&label) + 1 + columns(url) <= WIDTH {
        out.push_str(&format!("{label} {url}\n"));
    } else {
        out.push_str(&format!("{label}\n{url}\n"));
    }
}

fn rule() -> String {
    "-".repeat(WIDTH)
}

/// The greeting line(s) for `greeting` (already personalised), wrapped.
pub(crate) fn greeting_lines(greeting: &str) -> String {
    let mut out = String::new();
    push_wrapped(&mut out, greeting);
    out.pop();
    out
}

fn story_block(out: &mut String, strings: &Strings, story: &Story, links: &mut Vec<String>) {
    let a = &story.article;
    out.push_str(&a.category.to_uppercase());
    out.push('\n');
    let title = match a.url.as_deref().filter(|u| is_http_url(u)) {
        Some(url) => {
            links.push(url.to_string());
            format!("{} [{}]", a.title, links.len())
        }
        None => a.title.clone(),
    };
    push_wrapped(out, &title);
    if !a.summary.is_empty() {
        push_wrapped(out, &a.summary);
    }
    let reading = strings
        .story_reading_time
        .replace("{n}", &a.reading_minutes.to_string());
    if a.source.is_empty() {
        push_wrapped(out, &reading);
    } else {
        push_wrapped(out, &format!("{} · {reading}", a.source));
    }
    if !a.also_in.is_empty() {
        push_wrapped(
            out,
            &strings.also_in.replace("{sources}", &a.also_in.join(", ")),
        );
    }
}

/// The whole text body, with the greeting and unsubscribe slots.
pub(crate) fn document(ctx: &Ctx, intro: Option<&str>, stories: &[Story]) -> String {
    let s = ctx.strings;
    let mut out = String::with_capacity(4096);
    push_wrapped(&mut out, &ctx.name.to_uppercase());
    if !ctx.tagline.is_empty() {
        push_wrapped(&mut out, ctx.tagline);
    }
    let reading = s
        .digest_reading_time
        .replace("{n}", &ctx.reading_minutes.to_string());
    push_wrapped(&mut out, &format!("{} · {reading}", ctx.date));
    out.push_str(&rule());
    out.push_str("\n\n");

    out.push_str(SLOT_GREETING);
    out.push_str("\n\n");
    if let Some(intro) = intro {
        for p in intro.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
            push_wrapped(&mut out, p);
            out.push('\n');
        }
    }

    let mut links = Vec::new();
    for st in stories {
        out.push_str(&rule());
        out.push('\n');
        story_block(&mut out, s, st, &mut links);
        out.push('\n');
    }
    out.push_str(&rule());
    out.push('\n');
    if !links.is_empty() {
        out.push_str(&s.links_heading);
        out.push('\n');
        for (i, url) in links.iter().enumerate() {
            push_reference(&mut out, i + 1, url);
        }
        out.push('\n');
    }

    // The URLs stand on their own lines: the unsubscribe one is only known per subscriber.
    out.push_str(&s.view_in_browser);
    out.push('\n');
    out.push_str(&ctx.view_url);
    out.push_str("\n\n");
    out.push_str(&s.unsubscribe);
    out.push('\n');
    out.push_str(SLOT_UNSUBSCRIBE);
    out.push_str("\n\n");
    push_wrapped(&mut out, &s.why_received.replace("{name}", ctx.name));
    push_wrapped(&mut out, &ctx.theme.footer.publisher);
    push_wrapped(&mut out, &ctx.theme.footer.address);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_between_words_within_the_width() {
        let text = "Le président russe a rencontré le dirigeant nord-coréen lors d’un sommet dans la ville de Vladivostok, dans l’est du pays.";
        let lines = wrap(text, 40);
        assert!(lines.len() > 2);
        for l in &lines {
            assert!(columns(l) <= 40, "{l:?}");
        }
        assert_eq!(lines.join(" "), text);
    }

    #[test]
    fn wrap_keeps_french_punctuation_with_its_word() {
        let text = "Ce matin, le budget 2027 et un sommet inattendu à Vladivostok. Bonne lecture !";
        assert_eq!(
            wrap(text, 76),
            vec![
                "Ce matin, le budget 2027 et un sommet inattendu à Vladivostok. Bonne".to_string(),
                "lecture !".to_string()
            ]
        );
        assert_eq!(wrap("a « b » c", 5), vec!["a", "« b »", "c"]);
    }

    #[test]
    fn wrap_leaves_a_long_url_alone_on_its_line() {
        let url = format!("https://example.com/{}", "a".repeat(100));
        let lines = wrap(&format!("voir {url} ici"), 78);
        assert_eq!(lines, vec!["voir".to_string(), url, "ici".to_string()]);
    }

    #[test]
    fn wrap_counts_accented_letters_as_one_column() {
        let word = "é".repeat(10);
        let text = [word.as_str(); 7].join(" ");
        assert_eq!(wrap(&text, 76).len(), 1);
    }

    #[test]
    fn a_reference_too_long_for_one_line_puts_the_url_on_the_next() {
        let mut out = String::new();
        push_reference(&mut out, 3, "https://e.com/x");
        assert_eq!(out, "[3] https://e.com/x\n");
        let long = format!("https://e.com/{}", "x".repeat(80));
        let mut out = String::new();
        push_reference(&mut out, 3, &long);
        assert_eq!(out, format!("[3]\n{long}\n"));
    }
}

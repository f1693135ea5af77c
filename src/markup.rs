//! One small HTML tag scanner, shared by the two places that read markup: feed
//! text cleaned into plain text (`articles::text`) and the lint of our own email
//! (`deliver::lint`). It reads tags as a browser does where it matters to them:
//! a tag opens with `<` and a letter, `/`, `!` or `?`; attribute values may be
//! quoted and hold `>`; a quote elsewhere is part of a name; comments are skipped
//! whole. It does not build a tree.

/// A piece of HTML, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token<'a> {
    /// Text between tags (entities left as they are); a `<` that opens no tag
    /// ("a < b") is text.
    Text(&'a str),
    /// `<!-- … -->` (an unterminated comment runs to the end).
    Comment,
    /// An opening or closing tag, a declaration (`<!DOCTYPE …>`, without a name).
    Tag(Tag<'a>),
}

/// One tag as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag<'a> {
    /// Lowercase; empty for `<!…>` and `<?…>`.
    pub name: String,
    /// `</name>`.
    pub closing: bool,
    /// Ends with `/>`.
    pub self_closing: bool,
    /// The attributes' source, between the name and the closing `>`.
    attrs: &'a str,
    /// Index just past the tag's `>` in the scanned text.
    pub end: usize,
}

impl<'a> Tag<'a> {
    /// The attributes in order: lowercase-insensitive keys as written, values
    /// without their quotes (`""` for a key alone).
    pub fn attrs(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let s = self.attrs;
        let mut j = 0;
        std::iter::from_fn(move || loop {
            match attribute(s, j) {
                Attribute::Pair { key, value, next } => {
                    j = next;
                    if !key.is_empty() {
                        return Some((key, value));
                    }
                }
                Attribute::End(_) => return None,
            }
        })
    }

    /// The value of attribute `key` (ASCII case-insensitive), if present.
    pub fn attr(&self, key: &str) -> Option<&'a str> {
        self.attrs()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    }
}

/// The tokens of `html`.
pub fn tokens(html: &str) -> Tokens<'_> {
    Tokens { html, at: 0 }
}

/// An iterator over the [`Token`]s of some HTML.
#[derive(Debug, Clone)]
pub struct Tokens<'a> {
    html: &'a str,
    at: usize,
}

impl Tokens<'_> {
    /// Moves past the `</name …>` that closes the element just opened (ASCII
    /// case-insensitive), without reading what is inside: the content of
    /// `<script>`, `<style>` and the like is not markup. No closing tag: to the end.
    pub fn skip_element(&mut self, name: &str) {
        let hay = self.html.as_bytes();
        let n = name.len() + 2;
        let mut j = self.at;
        while j + n <= hay.len() {
            if hay[j] == b'<'
                && hay[j + 1] == b'/'
                && hay[j + 2..j + n].eq_ignore_ascii_case(name.as_bytes())
            {
                let boundary = hay.get(j + n).copied().unwrap_or(b'>');
                if !(boundary.is_ascii_alphanumeric() || boundary == b'-') {
                    self.at = tag_end(self.html, j + n).1;
                    return;
                }
            }
            j += 1;
        }
        self.at = hay.len();
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let (html, at) = (self.html, self.at);
        if at >= html.len() {
            return None;
        }
        let Some(rel) = html[at..].find('<') else {
            self.at = html.len();
            return Some(Token::Text(&html[at..]));
        };
        if rel > 0 {
            self.at = at + rel;
            return Some(Token::Text(&html[at..at + rel]));
        }
        let rest = &html[at..];
        if let Some(after) = rest.strip_prefix("<!--") {
            self.at = at + 4 + after.find("-->").map_or(after.len(), |p| p + 3);
            return Some(Token::Comment);
        }
        let next = rest.as_bytes().get(1).copied().unwrap_or(b' ');
        if !(next.is_ascii_alphabetic() || matches!(next, b'/' | b'!' | b'?')) {
            self.at = at + 1;
            return Some(Token::Text("<"));
        }
        let closing = next == b'/';
        let name_start = at + 1 + usize::from(closing);
        let name_len = html[name_start..]
            .bytes()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b':'))
            .count();
        let attrs_start = name_start + name_len;
        let (attrs_end, end) = tag_end(html, attrs_start);
        self.at = end;
        Some(Token::Tag(Tag {
            name: html[name_start..attrs_start].to_ascii_lowercase(),
            closing,
            self_closing: html[..end].ends_with("/>"),
            attrs: &html[attrs_start..attrs_end],
            end,
        }))
    }
}

/// One step through a tag's attributes.
enum Attribute<'a> {
    /// `key`, `key=value`, `key="value"`; `next` is where the following one starts.
    /// An empty key is a stray character, stepped over.
    Pair {
        key: &'a str,
        value: &'a str,
        next: usize,
    },
    /// The tag's `>` (or the end of the text) is at this index.
    End(usize),
}

/// The attribute at `j` in `s` (which runs from just after a tag's name).
fn attribute(s: &str, mut j: usize) -> Attribute<'_> {
    let b = s.as_bytes();
    while j < b.len() && (b[j].is_ascii_whitespace() || b[j] == b'/') {
        j += 1;
    }
    if j >= b.len() || b[j] == b'>' {
        return Attribute::End(j);
    }
    let k0 = j;
    while j < b.len() && !matches!(b[j], b'=' | b'>' | b'/') && !b[j].is_ascii_whitespace() {
        j += 1;
    }
    let key = &s[k0..j];
    let mut value = "";
    if j < b.len() && b[j] == b'=' {
        j += 1;
        if j < b.len() && (b[j] == b'"' || b[j] == b'\'') {
            let q = b[j];
            let v0 = j + 1;
            let v1 = b[v0..]
                .iter()
                .position(|&c| c == q)
                .map_or(b.len(), |p| v0 + p);
            value = &s[v0..v1];
            j = (v1 + 1).min(b.len());
        } else {
            let v0 = j;
            while j < b.len() && !b[j].is_ascii_whitespace() && b[j] != b'>' {
                j += 1;
            }
            value = &s[v0..j];
        }
    }
    if key.is_empty() && j == k0 {
        // A character that starts no key ("=" alone): step over it.
        j += 1;
    }
    Attribute::Pair {
        key,
        value,
        next: j,
    }
}

/// Where the attributes of a tag that start at `from` end (its `>`, quoted
/// values honoured), and the index just past that `>`; an unterminated tag runs
/// to the end.
fn tag_end(html: &str, from: usize) -> (usize, usize) {
    let mut j = 0;
    let rest = &html[from..];
    loop {
        match attribute(rest, j) {
            Attribute::Pair { next, .. } => j = next,
            Attribute::End(at) => return (from + at, from + (at + 1).min(rest.len())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(html: &str) -> Vec<Tag<'_>> {
        tokens(html)
            .filter_map(|t| match t {
                Token::Tag(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn attributes_are_read_with_quotes_and_a_quoted_greater_than_does_not_end_the_tag() {
        let html = r#"<IMG Src="a>b.png" alt='x "y"' hidden data-n=3 />after"#;
        let t = &tags(html)[0];
        assert_eq!(t.name, "img");
        assert!(t.self_closing && !t.closing);
        assert_eq!(t.attr("src"), Some("a>b.png"));
        assert_eq!(t.attr("ALT"), Some("x \"y\""));
        assert_eq!(t.attr("hidden"), Some(""));
        assert_eq!(t.attr("data-n"), Some("3"));
        assert_eq!(t.attr("title"), None);
        assert_eq!(&html[t.end..], "after");
    }

    #[test]
    fn text_comments_closing_tags_and_a_lone_less_than_come_in_order() {
        let got: Vec<String> = tokens("a < b<!-- c > d -->e</P><!DOCTYPE html><br>")
            .map(|t| match t {
                Token::Text(s) => format!("text {s}"),
                Token::Comment => "comment".into(),
                Token::Tag(t) if t.closing => format!("close {}", t.name),
                Token::Tag(t) => format!("open {}", t.name),
            })
            .collect();
        assert_eq!(
            got,
            ["text a ", "text <", "text  b", "comment", "text e", "close p", "open ", "open br"]
        );
    }

    #[test]
    fn an_element_is_skipped_to_its_closing_tag_whatever_it_holds() {
        let html = "<script>if (a < b) { x = '</scripts>' }</SCRIPT >after";
        let mut t = tokens(html);
        assert!(matches!(t.next(), Some(Token::Tag(tag)) if tag.name == "script"));
        t.skip_element("script");
        assert_eq!(t.next(), Some(Token::Text("after")));
        let mut t = tokens("<style>never closed");
        t.next();
        t.skip_element("style");
        assert_eq!(t.next(), None);
    }

    #[test]
    fn unterminated_tags_run_to_the_end() {
        let t = &tags("<a href=\"x>")[0];
        assert_eq!(t.attr("href"), Some("x>"));
        assert_eq!(t.end, "<a href=\"x>".len());
        assert_eq!(tokens("<p").count(), 1);
    }
}

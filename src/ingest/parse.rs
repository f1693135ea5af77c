//! Pure feed parsing: bytes in, raw items out. RSS 0.9x/1.0/2.0, Atom 1.0 and
//! JSON Feed 1.x, through `feed-rs`. No I/O, no clock.

use chrono::{DateTime, Utc};

/// One item as the feed gave it, before cleaning. Text fields may hold HTML.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawItem {
    pub title: Option<String>,
    /// The item's link as written (not yet checked or canonicalised).
    pub link: Option<String>,
    /// Teaser: RSS `description`, Atom `summary`, JSON Feed `summary`.
    pub summary: Option<String>,
    /// Full text when the feed carries it: `content:encoded`, Atom `content`,
    /// JSON Feed `content_html` / `content_text`.
    pub content: Option<String>,
    /// Published, else updated; `None` when the item carries no date.
    pub published: Option<DateTime<Utc>>,
    pub categories: Vec<String>,
}

/// Why a feed document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The bytes do not follow the encoding the document declares (or UTF-8).
    #[error(
        "the feed is {} but byte {offset} (line {line}) is not valid UTF-8; \
         the publisher must fix the encoding or declare the one it uses \
         (e.g. <?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>)",
        match declared {
            Some(d) => format!("declared as {d}"),
            None => "assumed UTF-8 (no encoding declared)".to_string(),
        }
    )]
    Encoding {
        declared: Option<String>,
        offset: usize,
        line: usize,
    },
    /// Broken XML or JSON, or a format that is none of the three.
    #[error("not a readable RSS, Atom or JSON feed: {error}")]
    Unreadable {
        error: feed_rs::parser::ParseFeedError,
    },
}

/// Parses a feed document. Fails with a sentence naming the problem: a declared
/// encoding the bytes do not follow, broken XML or JSON, or an unknown format.
pub fn parse_feed(bytes: &[u8]) -> Result<Vec<RawItem>, FeedError> {
    // A UTF-8 byte order mark (common from Windows tools and some CMSs) is not
    // part of the document: JSON parsers refuse it.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    check_encoding(bytes)?;
    let feed = feed_rs::parser::Builder::new()
        // Deterministic ids: the default falls back to random UUIDs.
        .id_generator(|_, _, _| String::new())
        .build()
        .parse(bytes)
        .map_err(|error| FeedError::Unreadable { error })?;
    Ok(feed.entries.into_iter().map(item_of).collect())
}

fn item_of(e: feed_rs::model::Entry) -> RawItem {
    let link = e
        .links
        .iter()
        .find(|l| matches!(l.rel.as_deref(), None | Some("alternate")))
        .or_else(|| e.links.first())
        .map(|l| l.href.clone());
    let mut categories: Vec<String> = Vec::new();
    for c in &e.categories {
        let name = c.label.clone().unwrap_or_else(|| c.term.clone());
        if !name.trim().is_empty() {
            categories.push(name);
        }
    }
    RawItem {
        title: e.title.map(|t| t.content),
        link,
        summary: e.summary.map(|t| t.content),
        content: e.content.and_then(|c| c.body),
        published: e.published.or(e.updated),
        categories,
    }
}

/// XML that declares UTF-8 (or nothing, which means UTF-8) must be valid UTF-8;
/// JSON must always be. Other declared encodings (ISO-8859-1, windows-1252, …)
/// are decoded by the XML reader. A feed that lies about its encoding is refused
/// rather than shown to readers as mojibake.
fn check_encoding(bytes: &[u8]) -> Result<(), FeedError> {
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if body.starts_with(b"\xFF\xFE") || body.starts_with(b"\xFE\xFF") {
        return Ok(()); // UTF-16 with a byte order mark: the XML reader decodes it.
    }
    let declared = declared_encoding(body);
    let utf8 = declared
        .as_deref()
        .map(|d| d.eq_ignore_ascii_case("utf-8") || d.eq_ignore_ascii_case("utf8"))
        .unwrap_or(true);
    if !utf8 {
        return Ok(());
    }
    match std::str::from_utf8(body) {
        Ok(_) => Ok(()),
        Err(e) => {
            let offset = e.valid_up_to() + (bytes.len() - body.len());
            let line = bytes[..offset].iter().filter(|b| **b == b'\n').count() + 1;
            Err(FeedError::Encoding {
                declared,
                offset,
                line,
            })
        }
    }
}

/// The `encoding="…"` of an XML declaration, if the document starts with one.
fn declared_encoding(body: &[u8]) -> Option<String> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    let head = &body[start..];
    if !head.starts_with(b"<?xml") {
        return None;
    }
    let end = head.iter().take(300).position(|b| *b == b'>')?;
    let decl = String::from_utf8_lossy(&head[..end]);
    let at = decl.find("encoding")?;
    let rest = decl[at + "encoding".len()..]
        .trim_start()
        .strip_prefix('=')?;
    let rest = rest.trim_start();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = &rest[1..];
    let close = value.find(quote)?;
    Some(value[..close].trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">
<channel><title>Monde</title><link>https://news.example.com/</link><description>d</description>
<item>
  <title>Premier &amp; titre</title>
  <link>https://news.example.com/a?utm_source=rss</link>
  <description>&lt;p&gt;Un résumé&lt;/p&gt;</description>
  <content:encoded><![CDATA[<p>Le texte complet.</p>]]></content:encoded>
  <category>Monde</category>
  <pubDate>Thu, 26 Nov 2026 08:15:00 +0000</pubDate>
</item>
<item><title>Sans date</title><link>https://news.example.com/b</link></item>
</channel></rss>"#;

    #[test]
    fn rss2_items_keep_title_link_summary_content_category_and_date() {
        let items = parse_feed(RSS.as_bytes()).unwrap();
        assert_eq!(items.len(), 2);
        let a = &items[0];
        assert_eq!(a.title.as_deref(), Some("Premier & titre"));
        assert_eq!(
            a.link.as_deref(),
            Some("https://news.example.com/a?utm_source=rss")
        );
        assert_eq!(a.summary.as_deref(), Some("<p>Un résumé</p>"));
        assert_eq!(a.content.as_deref(), Some("<p>Le texte complet.</p>"));
        assert_eq!(a.categories, vec!["Monde".to_string()]);
        assert_eq!(
            a.published.unwrap().to_rfc3339(),
            "2026-11-26T08:15:00+00:00"
        );
        assert_eq!(items[1].published, None);
    }

    #[test]
    fn atom_entries_are_read() {
        let atom = r#"<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Éco</title><id>urn:x</id><updated>2026-11-26T10:00:00Z</updated>
<entry><title type="html">Le &lt;em&gt;budget&lt;/em&gt;</title><id>urn:1</id>
<link rel="alternate" href="https://news.example.com/eco/1"/>
<updated>2026-11-26T10:00:00Z</updated><published>2026-11-26T09:00:00Z</published>
<summary>Résumé</summary><content type="html">&lt;p&gt;Texte&lt;/p&gt;</content>
<category term="economie" label="Économie"/></entry></feed>"#;
        let items = parse_feed(atom.as_bytes()).unwrap();
        assert_eq!(items.len(), 1);
        let e = &items[0];
        assert_eq!(e.title.as_deref(), Some("Le <em>budget</em>"));
        assert_eq!(e.link.as_deref(), Some("https://news.example.com/eco/1"));
        assert_eq!(
            e.published.unwrap().to_rfc3339(),
            "2026-11-26T09:00:00+00:00"
        );
        assert_eq!(e.categories, vec!["Économie".to_string()]);
        assert_eq!(e.content.as_deref(), Some("<p>Texte</p>"));
    }

    #[test]
    fn a_byte_order_mark_before_a_json_feed_or_an_rss_feed_is_skipped() {
        let json = "\u{FEFF}{\"version\":\"https://jsonfeed.org/version/1.1\",\"title\":\"C\",
            \"items\":[{\"id\":\"1\",\"url\":\"https://example.com/a\",\"title\":\"Été\"}]}";
        let items = parse_feed(json.as_bytes()).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].title.as_deref(), Some("Été"));
        let rss =
            "\u{FEFF}<?xml version=\"1.0\" encoding=\"utf-8\"?><rss version=\"2.0\"><channel>\
            <title>T</title><item><title>Un</title><link>https://example.com/u</link></item>\
            </channel></rss>";
        let items = parse_feed(rss.as_bytes()).unwrap();
        assert_eq!(items[0].title.as_deref(), Some("Un"));
    }

    #[test]
    fn json_feed_items_are_read() {
        let json = r#"{"version":"https://jsonfeed.org/version/1.1","title":"Culture",
          "items":[{"id":"1","url":"https://news.example.com/c/1","title":"Expo",
          "summary":"Court","content_html":"<p>Long</p>","date_published":"2026-11-26T12:00:00+01:00",
          "tags":["Culture"]}]}"#;
        let items = parse_feed(json.as_bytes()).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].title.as_deref(), Some("Expo"));
        assert_eq!(
            items[0].link.as_deref(),
            Some("https://news.example.com/c/1")
        );
        assert_eq!(items[0].content.as_deref(), Some("<p>Long</p>"));
        assert_eq!(items[0].summary.as_deref(), Some("Court"));
        assert_eq!(
            items[0].published.unwrap().to_rfc3339(),
            "2026-11-26T11:00:00+00:00"
        );
        assert_eq!(items[0].categories, vec!["Culture".to_string()]);
    }

    #[test]
    fn rss_1_and_0_91_are_read() {
        let rss1 = r#"<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel rdf:about="https://news.example.com/"><title>T</title><link>https://news.example.com/</link><description>d</description></channel>
<item rdf:about="https://news.example.com/r1"><title>RSS un</title><link>https://news.example.com/r1</link><dc:date>2026-11-26T07:00:00Z</dc:date></item>
</rdf:RDF>"#;
        let items = parse_feed(rss1.as_bytes()).unwrap();
        assert_eq!(items[0].title.as_deref(), Some("RSS un"));
        assert_eq!(
            items[0].link.as_deref(),
            Some("https://news.example.com/r1")
        );
        let rss091 = r#"<rss version="0.91"><channel><title>T</title><link>https://n.example.com/</link><description>d</description>
<item><title>Vieux format</title><link>https://n.example.com/v</link><description>x</description></item></channel></rss>"#;
        let items = parse_feed(rss091.as_bytes()).unwrap();
        assert_eq!(items[0].title.as_deref(), Some("Vieux format"));
    }

    #[test]
    fn broken_xml_is_an_error_not_a_panic() {
        let e = parse_feed(b"<rss version=\"2.0\"><channel><item><title>x</titl").unwrap_err();
        assert!(matches!(e, FeedError::Unreadable { .. }), "{e:?}");
        assert!(e.to_string().contains("not a readable"), "{e}");
        assert!(parse_feed(b"").is_err());
        assert!(parse_feed(b"{\"version\": 3").is_err());
        assert!(parse_feed(b"hello world").is_err());
    }

    #[test]
    fn latin1_bytes_declared_utf8_are_refused_with_the_place() {
        let mut doc = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\"><channel><title>T</title><item><title>Caf".to_vec();
        doc.push(0xE9); // é in Latin-1
        doc.extend_from_slice(b"</title></item></channel></rss>");
        let e = parse_feed(&doc).unwrap_err();
        assert!(
            matches!(&e, FeedError::Encoding { declared: Some(d), line: 2, .. } if d == "UTF-8"),
            "{e:?}"
        );
        assert!(e.to_string().contains("declared as UTF-8"), "{e}");
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn latin1_declared_as_latin1_is_decoded() {
        let mut doc = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<rss version=\"2.0\"><channel><title>T</title><link>https://n.example.com/</link><description>d</description><item><title>Caf".to_vec();
        doc.push(0xE9);
        doc.extend_from_slice(
            b"</title><link>https://n.example.com/c</link></item></channel></rss>",
        );
        let items = parse_feed(&doc).unwrap();
        assert_eq!(items[0].title.as_deref(), Some("Café"));
    }

    #[test]
    fn ids_are_not_random_so_parsing_is_deterministic() {
        assert_eq!(
            parse_feed(RSS.as_bytes()).unwrap(),
            parse_feed(RSS.as_bytes()).unwrap()
        );
    }
}

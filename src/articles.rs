//! Clean text, canonical links and deduplication for [`Article`]s: plain text
//! only, canonical http(s) links, one story however many sources carry it.
//! (Turning a feed item into an article is `ingest::normalise`, which uses these.)
//!
//! Everything here is pure. Feed text arrives as HTML of unknown quality; it leaves
//! as plain text (the renderer escapes it again, so this is about cleanliness, not
//! the only line of defence). HTML is turned into text by a small state machine
//! rather than a full HTML5 parser: we only need the words, not a layout, and the
//! rules that matter (drop `<script>`/`<style>` bodies, tags vanish, entities decode,
//! block tags separate words) fit in a page that the tests below pin down.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::NaiveDate;
use url::Url;

use crate::domain::Article;

/// Query parameters that only track readers; removed from canonical URLs.
const TRACKING_PARAMS: &[&str] = &["fbclid", "gclid", "mc_cid", "mc_eid", "igshid", "ref"];

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
    let bytes = input.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let Some(rel) = input[i..].find('<') else {
            out.push_str(&input[i..]);
            break;
        };
        out.push_str(&input[i..i + rel]);
        i += rel;
        let rest = &input[i..];
        if let Some(after) = rest.strip_prefix("<!--") {
            i += 4 + after.find("-->").map(|p| p + 3).unwrap_or(after.len());
            out.push(' ');
            continue;
        }
        let next = bytes.get(i + 1).copied().unwrap_or(b' ');
        if !(next.is_ascii_alphabetic() || next == b'/' || next == b'!' || next == b'?') {
            out.push('<');
            i += 1;
            continue;
        }
        let closing = next == b'/';
        let name_start = i + 1 + usize::from(closing);
        let name_len = input[name_start..]
            .bytes()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b':')
            .count();
        let name = input[name_start..name_start + name_len].to_ascii_lowercase();
        let tag_end = end_of_tag(input, name_start + name_len);
        i = tag_end;
        if !closing && HIDDEN_ELEMENTS.contains(&name.as_str()) {
            let self_closed = input[..tag_end].ends_with("/>");
            if !self_closed {
                i = skip_past_closing(input, tag_end, &name);
            }
            out.push(' ');
        } else if BLOCK_ELEMENTS.contains(&name.as_str()) {
            out.push(' ');
        }
    }
    out
}

/// Index just past the `>` that ends a tag whose attributes start at `from`,
/// honouring quoted attribute values. An unterminated tag runs to the end.
fn end_of_tag(s: &str, from: usize) -> usize {
    let mut quote: Option<u8> = None;
    for (off, c) in s.as_bytes()[from..].iter().enumerate() {
        match (quote, *c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'"') | (None, b'\'') => quote = Some(*c),
            (None, b'>') => return from + off + 1,
            _ => {}
        }
    }
    s.len()
}

/// Index past `</name ...>` (ASCII case-insensitive), or the end of `s`.
fn skip_past_closing(s: &str, from: usize, name: &str) -> usize {
    let needle = format!("</{name}");
    let hay = s.as_bytes();
    let n = needle.len();
    let mut j = from;
    while j + n <= hay.len() {
        if hay[j] == b'<' && hay[j..j + n].eq_ignore_ascii_case(needle.as_bytes()) {
            let boundary = hay.get(j + n).copied().unwrap_or(b'>');
            if !(boundary.is_ascii_alphanumeric() || boundary == b'-') {
                return end_of_tag(s, j + n);
            }
        }
        j += 1;
    }
    s.len()
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

/// The canonical form of a link, or `None` if it is not an absolute http(s) URL:
/// host lowercased, fragment, credentials and tracking parameters (`utm_*`,
/// `fbclid`, `gclid`, `mc_cid`, `mc_eid`, `igshid`, `ref`) removed, the other
/// parameters kept in order.
pub fn canonical_url(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.chars().any(|c| c.is_control()) {
        return None;
    }
    let mut u = Url::parse(raw).ok()?;
    if !matches!(u.scheme(), "http" | "https") {
        return None;
    }
    let host = u.host_str()?.to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    u.set_host(Some(&host)).ok()?;
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_fragment(None);
    if u.query().is_some() {
        let kept: Vec<(String, String)> = u
            .query_pairs()
            .filter(|(k, _)| !is_tracking_param(k))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if kept.is_empty() {
            u.set_query(None);
        } else {
            u.query_pairs_mut().clear().extend_pairs(kept);
        }
    }
    Some(u.to_string())
}

fn is_tracking_param(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.starts_with("utm_") || TRACKING_PARAMS.contains(&k.as_str())
}

/// A title reduced for comparison: lowercase, accents folded, punctuation removed,
/// whitespace folded.
pub fn title_fingerprint(title: &str) -> String {
    let mut out = String::with_capacity(title.len());
    for c in title.chars().flat_map(char::to_lowercase) {
        match fold_accent(c) {
            Some(s) => out.push_str(s),
            None if c.is_alphanumeric() => out.push(c),
            None => out.push(' '),
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn fold_accent(c: char) -> Option<&'static str> {
    Some(match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'æ' => "ae",
        'ç' | 'ć' | 'č' => "c",
        'ď' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ę' | 'ě' => "e",
        'ì' | 'í' | 'î' | 'ï' | 'ī' => "i",
        'ñ' | 'ń' | 'ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' => "o",
        'œ' => "oe",
        'ř' => "r",
        'ś' | 'š' | 'ş' => "s",
        'ß' => "ss",
        'ť' | 'ţ' => "t",
        'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' => "u",
        'ý' | 'ÿ' => "y",
        'ź' | 'ż' | 'ž' => "z",
        // Apostrophes join words in French ("l'euro"): treat them as separators.
        _ => return None,
    })
}

/// True when two fingerprinted titles tell the same story: equal, or token sets
/// with a Jaccard similarity of at least 0.8.
pub fn titles_match(a: &str, b: &str) -> bool {
    if a.is_empty() || b.is_empty() {
        return false;
    }
    if a == b {
        return true;
    }
    let ta: BTreeSet<&str> = a.split(' ').collect();
    let tb: BTreeSet<&str> = b.split(' ').collect();
    let inter = ta.intersection(&tb).count();
    let union = ta.union(&tb).count();
    union > 0 && inter * 5 >= union * 4
}

/// Total order of "which copy of a story to keep": highest source weight, then
/// earliest published, then URL (key), then source name.
fn better(a: &Article, b: &Article) -> std::cmp::Ordering {
    b.source_weight
        .total_cmp(&a.source_weight)
        .then(a.published.cmp(&b.published))
        .then_with(|| a.key().cmp(&b.key()))
        .then_with(|| a.source.cmp(&b.source))
        .then_with(|| a.title.cmp(&b.title))
        .then_with(|| a.summary.cmp(&b.summary))
}

struct Cluster<T> {
    kept: Article,
    urls: BTreeSet<String>,
    /// (title tokens, calendar day) of every member.
    titles: Vec<(T, NaiveDate)>,
}

/// [`titles_match`] on token-id sets (sorted, distinct): same verdict, no allocation.
fn token_sets_match(a: &[u32], b: &[u32]) -> bool {
    if a.is_empty() || b.is_empty() {
        return false;
    }
    let (small, big) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    // inter ≤ |small| and union ≥ |big|: cannot reach 0.8 if the sizes differ too much.
    if small.len() * 5 < big.len() * 4 {
        return false;
    }
    let (mut i, mut j, mut inter) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - inter;
    inter * 5 >= union * 4
}

/// Folds duplicates: the same canonical URL, or near-identical titles published
/// the same (UTC) calendar day. Keeps the best source (highest weight, then
/// earliest, then URL), records the others in `also_in`. Returns the kept articles
/// and, for each dropped one, the URL (or key) of the story it duplicates.
/// The result does not depend on the order of the input.
pub fn dedupe(mut articles: Vec<Article>) -> (Vec<Article>, Vec<(Article, String)>) {
    articles.sort_by(better);
    let fingerprints: Vec<String> = articles
        .iter()
        .map(|a| title_fingerprint(&a.title))
        .collect();
    let token_sets = title_token_sets(&fingerprints);
    let mut clusters: Vec<Cluster<Vec<u32>>> = Vec::new();
    let mut by_url: BTreeMap<String, usize> = BTreeMap::new();
    // (day, token) → clusters with a member title of that day whose prefix holds the token.
    let mut by_token: HashMap<(NaiveDate, u32), Vec<usize>> = HashMap::new();
    let mut dups: Vec<(Article, String)> = Vec::new();
    let mut candidates: Vec<usize> = Vec::new();
    for (a, tokens) in articles.into_iter().zip(token_sets) {
        let day = a.published.date_naive();
        let n: usize = tokens.len();
        let prefix_len = n - (4 * n).div_ceil(5) + usize::from(n > 0);
        let found = a
            .url
            .as_ref()
            .and_then(|u| by_url.get(u).copied())
            .or_else(|| {
                // Only clusters sharing a prefix token on that day can match; check
                // them in cluster order so the first match is the one a scan finds.
                candidates.clear();
                for t in &tokens[..prefix_len] {
                    if let Some(cs) = by_token.get(&(day, *t)) {
                        candidates.extend_from_slice(cs);
                    }
                }
                candidates.sort_unstable();
                candidates.dedup();
                candidates.iter().copied().find(|&ci| {
                    clusters[ci]
                        .titles
                        .iter()
                        .any(|(t, d)| *d == day && token_sets_match(t, &tokens))
                })
            });
        let prefix = tokens[..prefix_len].to_vec();
        let ci = match found {
            Some(ci) => {
                let c = &mut clusters[ci];
                if a.source != c.kept.source && !c.kept.also_in.contains(&a.source) {
                    c.kept.also_in.push(a.source.clone());
                }
                if let Some(u) = &a.url {
                    c.urls.insert(u.clone());
                    by_url.insert(u.clone(), ci);
                }
                c.titles.push((tokens, day));
                dups.push((a, c.kept.key()));
                ci
            }
            None => {
                let ci = clusters.len();
                let mut urls = BTreeSet::new();
                if let Some(u) = &a.url {
                    urls.insert(u.clone());
                    by_url.insert(u.clone(), ci);
                }
                clusters.push(Cluster {
                    kept: a,
                    urls,
                    titles: vec![(tokens, day)],
                });
                ci
            }
        };
        for t in prefix {
            let cs = by_token.entry((day, t)).or_default();
            if cs.last() != Some(&ci) {
                cs.push(ci);
            }
        }
    }
    let kept = clusters
        .into_iter()
        .map(|mut c| {
            c.kept.also_in.sort();
            c.kept
        })
        .collect();
    (kept, dups)
}

/// The distinct tokens of each fingerprint as ids in a fixed order, rarest first
/// (prefix filtering): a title of n tokens is indexed under its first
/// n − ⌈4n/5⌉ + 1. Two titles that match (Jaccard ≥ 0.8, see [`titles_match`])
/// share at least ⌈4n/5⌉ tokens, so the first shared token in that order lies in
/// both prefixes: only clusters indexed under a token of the prefix can match.
fn title_token_sets(fingerprints: &[String]) -> Vec<Vec<u32>> {
    let sets: Vec<BTreeSet<&str>> = fingerprints
        .iter()
        .map(|f| f.split(' ').filter(|t| !t.is_empty()).collect())
        .collect();
    let mut freq: HashMap<&str, usize> = HashMap::new();
    for s in &sets {
        for t in s {
            *freq.entry(t).or_default() += 1;
        }
    }
    let mut order: Vec<(&str, usize)> = freq.into_iter().collect();
    order.sort_unstable_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(b.0)));
    let rank: HashMap<&str, u32> = order
        .iter()
        .enumerate()
        .map(|(i, (t, _))| (*t, i as u32))
        .collect();
    sets.iter()
        .map(|s| {
            let mut ids: Vec<u32> = s.iter().map(|t| rank[t]).collect();
            ids.sort_unstable();
            ids
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeZone, Utc};

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, h, m, 0).unwrap()
    }

    fn art(title: &str, url: Option<&str>, source: &str, weight: f64, h: u32) -> Article {
        Article {
            title: title.into(),
            url: url.map(String::from),
            source: source.into(),
            category: "Monde".into(),
            published: at(h, 0),
            summary: String::new(),
            reading_minutes: 1,
            source_weight: weight,
            also_in: vec![],
        }
    }

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

    #[test]
    fn tracking_parameters_and_fragment_are_removed_host_lowercased() {
        assert_eq!(
            canonical_url("https://News.Example.COM/a/b?utm_source=x&id=3&fbclid=y&Ref=z#top")
                .as_deref(),
            Some("https://news.example.com/a/b?id=3")
        );
        assert_eq!(
            canonical_url("http://example.com/x?utm_medium=email").as_deref(),
            Some("http://example.com/x")
        );
        assert_eq!(
            canonical_url(" https://user:pw@example.com/ ").as_deref(),
            Some("https://example.com/")
        );
    }

    #[test]
    fn only_absolute_http_links_are_kept() {
        for bad in [
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "data:text/html,<b>x</b>",
            "/relative/path",
            "ftp://example.com/f",
            "mailto:a@b.c",
            "https://exa\nmple.com/",
            "",
        ] {
            assert_eq!(canonical_url(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn fingerprint_folds_case_accents_and_punctuation() {
        assert_eq!(
            title_fingerprint("Budget 2027 : l'Élysée défend ses « recettes » !"),
            "budget 2027 l elysee defend ses recettes"
        );
    }

    #[test]
    fn near_identical_titles_match_different_ones_do_not() {
        let a =
            title_fingerprint("Le Parlement adopte la réforme des retraites en première lecture");
        let b =
            title_fingerprint("Le Parlement adopte la réforme des retraites en première lecture !");
        let c = title_fingerprint("Le Parlement rejette la réforme du chômage");
        assert!(titles_match(&a, &b));
        assert!(!titles_match(&a, &c));
    }

    #[test]
    fn same_canonical_url_is_one_story_kept_from_the_heaviest_source() {
        let a = art("Titre A", Some("https://x.fr/1"), "Light", 1.0, 6);
        let b = art("Autre titre", Some("https://x.fr/1"), "Heavy", 2.0, 9);
        let (kept, dups) = dedupe(vec![a, b]);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].source, "Heavy");
        assert_eq!(kept[0].also_in, vec!["Light".to_string()]);
        assert_eq!(dups.len(), 1);
        assert_eq!(dups[0].0.source, "Light");
        assert_eq!(dups[0].1, "https://x.fr/1");
    }

    #[test]
    fn near_identical_titles_the_same_day_are_one_story_earliest_wins_on_equal_weight() {
        let a = art(
            "Le gel frappe les vignobles du Bordelais",
            Some("https://a.fr/1"),
            "A",
            1.0,
            10,
        );
        let b = art(
            "Le gel frappe les vignobles du Bordelais.",
            Some("https://b.fr/2"),
            "B",
            1.0,
            7,
        );
        let (kept, dups) = dedupe(vec![a.clone(), b.clone()]);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].source, "B");
        assert_eq!(dups[0].1, "https://b.fr/2");
        // Another day: two stories.
        let mut later = a;
        later.published = Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap();
        let (kept, _) = dedupe(vec![later, b]);
        assert_eq!(kept.len(), 2);
    }

    #[test]
    fn dedupe_does_not_depend_on_input_order() {
        let v = vec![
            art("Un", Some("https://x.fr/1"), "A", 1.0, 6),
            art("Un", Some("https://x.fr/1?utm_source=z"), "B", 1.0, 6),
            art("Deux histoires", Some("https://x.fr/2"), "C", 1.5, 7),
            art("Deux histoires", None, "D", 1.5, 7),
        ];
        let mut r = v.clone();
        r.reverse();
        assert_eq!(dedupe(v), dedupe(r));
    }

    /// The scan over every cluster that the token index replaces.
    fn dedupe_by_scan(mut articles: Vec<Article>) -> (Vec<Article>, Vec<(Article, String)>) {
        articles.sort_by(better);
        let mut clusters: Vec<Cluster<String>> = Vec::new();
        let mut by_url: BTreeMap<String, usize> = BTreeMap::new();
        let mut dups = Vec::new();
        for a in articles {
            let fp = title_fingerprint(&a.title);
            let day = a.published.date_naive();
            let found = a
                .url
                .as_ref()
                .and_then(|u| by_url.get(u).copied())
                .or_else(|| {
                    clusters.iter().position(|c| {
                        c.titles
                            .iter()
                            .any(|(t, d)| *d == day && titles_match(t, &fp))
                    })
                });
            match found {
                Some(ci) => {
                    let c = &mut clusters[ci];
                    if a.source != c.kept.source && !c.kept.also_in.contains(&a.source) {
                        c.kept.also_in.push(a.source.clone());
                    }
                    if let Some(u) = &a.url {
                        by_url.insert(u.clone(), ci);
                    }
                    c.titles.push((fp, day));
                    dups.push((a, c.kept.key()));
                }
                None => {
                    if let Some(u) = &a.url {
                        by_url.insert(u.clone(), clusters.len());
                    }
                    clusters.push(Cluster {
                        kept: a,
                        urls: BTreeSet::new(),
                        titles: vec![(fp, day)],
                    });
                }
            }
        }
        let kept = clusters
            .into_iter()
            .map(|mut c| {
                c.kept.also_in.sort();
                c.kept
            })
            .collect();
        (kept, dups)
    }

    #[test]
    fn the_token_index_finds_the_same_duplicates_as_a_scan_of_every_cluster() {
        // Titles from a tiny vocabulary, so that many are near-identical (Jaccard
        // around 0.8) and many share URLs or days: a pseudo-random but fixed mix.
        let words = [
            "budget", "euro", "vote", "loi", "pluie", "match", "prix", "élu", "état",
        ];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut v = Vec::new();
        for i in 0..600 {
            let len = 1 + next(7) as usize;
            let title: Vec<&str> = (0..len).map(|_| words[next(9) as usize]).collect();
            let url = match next(4) {
                0 => None,
                1 => Some(format!("https://x.fr/{}", next(40))),
                _ => Some(format!("https://x.fr/u{i}")),
            };
            let source = ["A", "B", "C", "D"][next(4) as usize];
            let mut a = art(
                &title.join(" "),
                url.as_deref(),
                source,
                1.0 + next(3) as f64,
                6,
            );
            a.published =
                at(next(24) as u32, next(60) as u32) + chrono::Duration::days(next(2) as i64);
            v.push(a);
        }
        let (kept, dups) = dedupe(v.clone());
        assert!(dups.len() > 100, "the fixture must exercise folding");
        assert_eq!((kept, dups), dedupe_by_scan(v));
    }
}

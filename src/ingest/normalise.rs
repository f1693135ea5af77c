//! A parsed feed item → an [`Article`]: clean title and teaser, canonical link,
//! category, reading time. Pure; the text and link rules are [`crate::articles`]'.

use chrono::{DateTime, Utc};

use super::RawItem;
use crate::articles::{canonical_url, clean_text, cut_at_word};
use crate::domain::{minutes_for, word_count, Article};

/// Longest teaser, in characters, before it is cut at a word boundary with "…".
pub const SUMMARY_MAX_CHARS: usize = 220;
/// Longest title, in characters (a hostile feed can send megabytes).
pub const TITLE_MAX_CHARS: usize = 180;

/// What the normaliser needs to know about the source an item came from.
#[derive(Debug, Clone, Copy)]
pub struct SourceInfo<'a> {
    pub name: &'a str,
    pub category: Option<&'a str>,
    pub weight: f64,
}

/// Turns a parsed feed item into an [`Article`]: clean title and teaser, canonical
/// link (or none), category, reading time of the full text. `published` is the
/// item's date or, for an undated item, when it was first seen.
/// Returns `None` for an item with neither a title nor any text.
pub fn normalise(
    raw: &RawItem,
    src: &SourceInfo<'_>,
    published: DateTime<Utc>,
    words_per_minute: u32,
) -> Option<Article> {
    let summary_full = raw.summary.as_deref().map(clean_text).unwrap_or_default();
    let content_full = raw.content.as_deref().map(clean_text).unwrap_or_default();
    let teaser_source = if summary_full.is_empty() {
        &content_full
    } else {
        &summary_full
    };
    let mut title = raw.title.as_deref().map(clean_text).unwrap_or_default();
    if title.is_empty() {
        title = teaser_source.clone();
    }
    if title.is_empty() {
        return None;
    }
    let title = cut_at_word(&title, TITLE_MAX_CHARS);
    let summary = cut_at_word(teaser_source, SUMMARY_MAX_CHARS);
    // The full article when the feed carries it, else what we have of it.
    let body_words = if content_full.is_empty() {
        word_count(&summary_full)
    } else {
        word_count(&content_full)
    };
    let category = raw
        .categories
        .iter()
        .map(|c| cut_at_word(&clean_text(c), 40))
        .find(|c| !c.is_empty())
        .or_else(|| src.category.map(clean_text).filter(|c| !c.is_empty()))
        .unwrap_or_else(|| clean_text(src.name));
    Some(Article {
        title,
        url: raw.link.as_deref().and_then(canonical_url),
        source: src.name.to_string(),
        category,
        published,
        summary,
        reading_minutes: minutes_for(body_words, words_per_minute),
        source_weight: src.weight,
        also_in: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, h, m, 0).unwrap()
    }

    #[test]
    fn normalise_cleans_fields_and_falls_back_for_category() {
        let raw = RawItem {
            title: Some("<b>Titre</b>\r\nsuite".into()),
            link: Some("javascript:alert(1)".into()),
            summary: Some("<p>Résumé <script>x()</script>court.</p>".into()),
            content: Some(format!("<p>{}</p>", "mot ".repeat(700))),
            published: None,
            categories: vec![],
        };
        let src = SourceInfo {
            name: "Monde",
            category: Some("International"),
            weight: 2.0,
        };
        let a = normalise(&raw, &src, at(8, 0), 230).unwrap();
        assert_eq!(a.title, "Titre suite");
        assert_eq!(a.url, None);
        assert_eq!(a.summary, "Résumé court.");
        assert_eq!(a.category, "International");
        assert_eq!(a.reading_minutes, 4);
        assert_eq!(a.source_weight, 2.0);
        let no_cat = SourceInfo {
            category: None,
            ..src
        };
        assert_eq!(
            normalise(&raw, &no_cat, at(8, 0), 230).unwrap().category,
            "Monde"
        );
        let own = RawItem {
            categories: vec!["  ".into(), "Économie".into()],
            ..raw.clone()
        };
        assert_eq!(
            normalise(&own, &src, at(8, 0), 230).unwrap().category,
            "Économie"
        );
    }

    #[test]
    fn an_item_without_title_or_text_is_dropped_and_untitled_ones_borrow_the_teaser() {
        let empty = RawItem::default();
        let src = SourceInfo {
            name: "S",
            category: None,
            weight: 1.0,
        };
        assert!(normalise(&empty, &src, at(8, 0), 230).is_none());
        let untitled = RawItem {
            summary: Some("Un texte sans titre".into()),
            ..RawItem::default()
        };
        assert_eq!(
            normalise(&untitled, &src, at(8, 0), 230).unwrap().title,
            "Un texte sans titre"
        );
    }
}

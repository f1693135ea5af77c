//! The shipped templates and the public render, through the library's API.

use std::path::Path;

use chrono::{NaiveDate, TimeZone, Utc};
use digestif::deliver::lint::lint_message;
use digestif::domain::{Article, Digest, Locale, Story};
use digestif::render::{render_public, render_variant, Assets, Personal};

fn templates_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/templates"))
}

fn digest() -> Digest {
    let story = |i: u32, category: &str| Story {
        article: Article {
            title: format!("Histoire {i}"),
            url: Some(format!("https://news.example.com/{i}")),
            source: "Le Quotidien".into(),
            category: category.into(),
            published: Utc.with_ymd_and_hms(2026, 11, 27, 5, 0, 0).unwrap(),
            summary: "Un résumé…".into(),
            reading_minutes: i,
            source_weight: 1.0,
            also_in: vec![],
        },
        score: 1.0,
        pinned: false,
    };
    Digest {
        date: NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(),
        name: "L'Essentiel".into(),
        tagline: "La newsletter qui vous briefe en 5 min".into(),
        locale: Locale::Fr,
        base_url: "https://news.example.com/digestif/".into(),
        intro: None,
        stories: vec![story(1, "Monde"), story(2, "Sport"), story(3, "Monde")],
        reading_minutes: 2,
        built_at: Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 0).unwrap(),
        window_start: Utc.with_ymd_and_hms(2026, 11, 26, 6, 0, 0).unwrap(),
        window_end: Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 0).unwrap(),
    }
}

#[test]
fn the_shipped_templates_folder_loads_to_the_built_in_assets() {
    let loaded = Assets::load(templates_dir()).expect("templates/ is valid");
    assert_eq!(loaded, Assets::builtin());
}

#[test]
fn a_broken_templates_folder_names_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["theme.toml", "fr.toml", "en.toml"] {
        std::fs::copy(templates_dir().join(f), dir.path().join(f)).unwrap();
    }
    let theme = std::fs::read_to_string(dir.path().join("theme.toml")).unwrap();
    std::fs::write(
        dir.path().join("theme.toml"),
        theme.replace("[footer]", "[footer]\npostcode = \"75002\""),
    )
    .unwrap();
    let err = Assets::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("theme.toml"), "{err}");
    assert!(err.contains("postcode"), "{err}");
}

#[test]
fn the_public_version_links_the_archive_page_and_the_public_unsubscribe_page() {
    let e = render_public(&digest(), &Assets::builtin(), "{name} · {date}");
    assert_eq!(e.subject, "L'Essentiel · vendredi 27 novembre 2026");
    assert!(e
        .html
        .contains("href=\"https://news.example.com/digestif/archive/2026-11-27\""));
    assert!(e
        .html
        .contains("href=\"https://news.example.com/digestif/unsubscribe\""));
    assert!(lint_message(&e.html, &e.text, &[], 0).is_empty());
}

#[test]
fn one_variant_serves_many_subscribers_with_only_their_parts_differing() {
    let t = render_variant(
        &digest(),
        &Assets::builtin(),
        Locale::En,
        &["Sport".into()],
        "{top_title}",
    );
    assert_eq!(t.subject(), "Histoire 2");
    let a = t.personalise(&Personal {
        name: Some("Ann".into()),
        unsubscribe_url: "https://news.example.com/digestif/unsubscribe?t=aaa".into(),
    });
    let b = t.personalise(&Personal {
        name: Some("Bob".into()),
        unsubscribe_url: "https://news.example.com/digestif/unsubscribe?t=bbb".into(),
    });
    assert!(a.text.contains("Hello Ann,") && b.text.contains("Hello Bob,"));
    assert_eq!(
        a.html.replace("Ann", "Bob").replace("t=aaa", "t=bbb"),
        b.html
    );
    assert!(a.html.contains("<html lang=\"en\""));
}

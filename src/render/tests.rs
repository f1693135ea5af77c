//! Tests of the whole render: snapshots of what people read, safety, wrapping,
//! personalisation, and the pre-send rules.

use chrono::{NaiveDate, TimeZone, Utc};

use super::*;
use crate::deliver::lint::{lint_message, Rule, MAX_HTML_BYTES};
use crate::domain::{Article, Story};

const SUBJECT: &str = "{name} · {date} · {top_title}";

fn story(
    title: &str,
    url: Option<&str>,
    category: &str,
    source: &str,
    summary: &str,
    minutes: u32,
) -> Story {
    Story {
        article: Article {
            title: title.into(),
            url: url.map(String::from),
            source: source.into(),
            category: category.into(),
            published: Utc.with_ymd_and_hms(2026, 11, 27, 5, 0, 0).unwrap(),
            summary: summary.into(),
            reading_minutes: minutes,
            source_weight: 1.0,
            also_in: vec![],
        },
        score: 1.0,
        pinned: false,
    }
}

/// The fixture issue: five stories, an intro, one "also in", one story without a link.
fn fixture() -> Digest {
    let mut stories = vec![
        story(
            "Budget 2027 : le gouvernement dévoile ses recettes",
            Some("https://news.example.com/eco/budget-2027-recettes"),
            "Économie",
            "Le Quotidien",
            "Le projet de loi de finances prévoit 12 milliards d’euros de recettes nouvelles, dont une taxe sur les rachats d’actions et la fin de plusieurs niches fiscales…",
            4,
        ),
        story(
            "Première rencontre entre Vladimir Poutine et Kim Jong Un",
            Some("https://news.example.com/monde/poutine-kim"),
            "Monde",
            "Agence Monde",
            "Le président russe a rencontré le dirigeant nord-coréen lors d’un sommet dans la ville de Vladivostok, dans l’est du pays, où les deux hommes…",
            2,
        ),
        story(
            "Canada : une ville touristique en partie détruite par le feu",
            Some("https://news.example.com/monde/jasper-incendie"),
            "Monde",
            "Le Quotidien",
            "Un incendie incontrôlable ravage le parc national de Jasper, une destination touristique des Rocheuses canadiennes, détruisant jeudi jusqu'à…",
            3,
        ),
        story(
            "Salt Lake City, hôte des Jeux olympiques d’hiver 2034",
            Some("https://news.example.com/sport/salt-lake-city-2034"),
            "Sport",
            "Sport Matin",
            "Le Comité international olympique (CIO) a attribué l’organisation des Jeux olympiques d’hiver 2034 à la ville américaine de Salt Lake City.",
            2,
        ),
        story(
            "Crise climatique : l’ONU alerte sur les dangers des vagues de chaleur",
            None,
            "Planète",
            "Dépêches",
            "Face à des températures record, António Guterres, secrétaire général de l'ONU, a exprimé une urgence mondiale…",
            1,
        ),
    ];
    stories[1].article.also_in = vec!["Le Quotidien".into(), "Radio Info".into()];
    stories[0].pinned = true;
    Digest {
        date: NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(),
        name: "L'Essentiel".into(),
        tagline: "La newsletter qui vous briefe en 5 min".into(),
        locale: Locale::Fr,
        base_url: "https://news.example.com/digestif".into(),
        intro: Some(
            "Ce matin, le budget 2027 et un sommet inattendu à Vladivostok. Bonne lecture !".into(),
        ),
        stories,
        reading_minutes: 4,
        built_at: Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 0).unwrap(),
        window_start: Utc.with_ymd_and_hms(2026, 11, 26, 6, 0, 0).unwrap(),
        window_end: Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 0).unwrap(),
    }
}

fn personal() -> Personal {
    Personal {
        name: Some("Zoé".into()),
        unsubscribe_url: "https://news.example.com/digestif/unsubscribe?s=42&t=abc123".into(),
    }
}

fn render(locale: Locale) -> RenderedEmail {
    render_variant(&fixture(), &Assets::builtin(), locale, &[], SUBJECT).personalise(&personal())
}

#[test]
fn the_french_html_matches_its_snapshot() {
    insta::assert_snapshot!("fr_html", render(Locale::Fr).html);
}

#[test]
fn the_french_text_matches_its_snapshot() {
    insta::assert_snapshot!("fr_text", render(Locale::Fr).text);
}

#[test]
fn the_english_html_matches_its_snapshot() {
    insta::assert_snapshot!("en_html", render(Locale::En).html);
}

#[test]
fn the_english_text_matches_its_snapshot() {
    insta::assert_snapshot!("en_text", render(Locale::En).text);
}

#[test]
fn the_header_shows_the_name_the_date_in_the_locale_and_the_reading_time() {
    let fr = render(Locale::Fr);
    assert!(fr.html.contains("L&#39;Essentiel") || fr.html.contains("L'Essentiel"));
    assert!(fr
        .html
        .contains("Vendredi 27 novembre 2026 · ≈ 4 min de lecture"));
    assert!(fr
        .text
        .contains("vendredi 27 novembre 2026 · ≈ 4 min de lecture"));
    let en = render(Locale::En);
    assert!(en.html.contains("Friday 27 November 2026 · ≈ 4 min read"));
    assert!(en.html.contains("<html lang=\"en\""));
    assert!(fr.html.contains("<html lang=\"fr\""));
}

#[test]
fn each_story_shows_category_linked_title_summary_reading_time_and_also_in() {
    let e = render(Locale::Fr);
    assert!(e
        .html
        .contains("<a href=\"https://news.example.com/monde/poutine-kim\""));
    assert!(e.html.contains(">Monde</p>"));
    assert!(e.html.contains("Temps de lecture : 2 min"));
    assert!(e.html.contains("Aussi dans : Le Quotidien, Radio Info"));
    assert!(e.text.contains("Aussi dans : Le Quotidien, Radio Info"));
    assert!(e
        .text
        .contains("[2] https://news.example.com/monde/poutine-kim"));
    // The story without a link is plain text in both bodies.
    let no_link = "Crise climatique : l’ONU alerte sur les dangers des vagues de chaleur";
    assert!(e.html.contains(&format!(">{no_link}</h2>")));
    assert!(e.text.contains(&format!("{no_link}\n")));
    assert!(!e.text.contains("[5]"));
}

#[test]
fn the_subject_is_filled_from_its_template_and_holds_no_line_break() {
    let e = render(Locale::Fr);
    assert_eq!(
        e.subject,
        "L'Essentiel · vendredi 27 novembre 2026 · Budget 2027 : le gouvernement dévoile ses recettes"
    );
    let mut d = fixture();
    d.stories[0].article.title = "Evil\r\nBcc: victim@example.com".into();
    d.name = "Name\nX".into();
    let t = render_variant(
        &d,
        &Assets::builtin(),
        Locale::En,
        &[],
        "{name}\r\n{top_title}",
    );
    assert!(!t.subject().contains(['\r', '\n']), "{:?}", t.subject());
    assert_eq!(t.subject(), "Name X Evil Bcc: victim@example.com");
    d.stories.clear();
    let t = render_variant(&d, &Assets::builtin(), Locale::En, &[], SUBJECT);
    assert_eq!(t.subject(), "Name X · Friday 27 November 2026");
}

#[test]
fn hostile_feed_text_never_becomes_markup() {
    let mut d = fixture();
    let a = &mut d.stories[1].article;
    a.title = "<script>alert(1)</script>".into();
    a.summary = "x\" onerror=\"alert(1)".into();
    a.category = "</td></tr><img src=x onerror=alert(2)>".into();
    a.source = "<b>bold</b>".into();
    a.also_in = vec!["<iframe src=//evil>".into()];
    d.stories[2].article.url = Some("javascript:alert(3)".into());
    d.stories[3].article.url = Some("\" onmouseover=\"alert(4)".into());
    d.intro = Some("<style>body{display:none}</style>".into());
    d.name = "<svg onload=alert(5)>".into();
    let e =
        render_variant(&d, &Assets::builtin(), Locale::Fr, &[], SUBJECT).personalise(&Personal {
            name: Some("<img src=x onerror=alert(6)>".into()),
            unsubscribe_url: "javascript:alert(7)".into(),
        });
    for bad in [
        "<script",
        "<img src=x",
        "<b>",
        "<iframe",
        "<svg",
        "\" onerror=\"",
        "\" onmouseover=\"",
        "javascript:",
        "<style>body",
    ] {
        assert!(!e.html.contains(bad), "{bad:?} reached the HTML");
    }
    assert!(e.html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!e.text.contains("javascript:"));
    // The unusable unsubscribe URL fell back to the public page.
    assert!(e
        .html
        .contains("href=\"https://news.example.com/digestif/unsubscribe\""));
    // Every href in the document is http(s).
    for (i, _) in e.html.match_indices("href=\"") {
        let rest = &e.html[i + 6..];
        assert!(
            rest.starts_with("https://") || rest.starts_with("http://"),
            "{}",
            &rest[..40]
        );
    }
}

fn is_bare_url(line: &str) -> bool {
    let l = line.trim();
    (l.starts_with("https://") || l.starts_with("http://")) && !l.contains(' ')
}

#[test]
fn every_text_line_fits_in_78_columns_except_bare_urls() {
    let mut d = fixture();
    d.stories[0].article.url = Some(format!(
        "https://news.example.com/{}",
        "long-slug-".repeat(10)
    ));
    d.stories[1].article.summary = "mot ".repeat(200);
    d.intro = Some(format!(
        "{}\n\n{}",
        "Un paragraphe assez long. ".repeat(12),
        "Deuxième."
    ));
    for locale in Locale::ALL {
        let t = render_variant(&d, &Assets::builtin(), locale, &[], SUBJECT);
        let mut p = personal();
        p.name =
            Some("Marie-Antoinette Josèphe Jeanne de Habsbourg-Lorraine, archiduchesse".into());
        let e = t.personalise(&p);
        for line in e.text.lines() {
            assert!(
                line.chars().count() <= 78 || is_bare_url(line),
                "{locale}: {} columns: {line:?}",
                line.chars().count()
            );
        }
    }
}

#[test]
fn personalise_inserts_the_escaped_name_and_the_unsubscribe_url_in_both_bodies() {
    let t = render_variant(&fixture(), &Assets::builtin(), Locale::Fr, &[], SUBJECT);
    let e = t.personalise(&Personal {
        name: Some("Zoé <b>&</b> Léa".into()),
        unsubscribe_url: "https://news.example.com/digestif/unsubscribe?s=42&t=abc123".into(),
    });
    assert!(
        e.html
            .contains("Bonjour Zoé &lt;b&gt;&amp;&lt;&#x2F;b&gt; Léa,")
            || e.html.contains("Bonjour Zoé &lt;b&gt;&amp;&lt;/b&gt; Léa,"),
        "{}",
        e.html
    );
    assert!(e.text.contains("Bonjour Zoé <b>&</b> Léa,\n"));
    assert!(e
        .html
        .contains("href=\"https://news.example.com/digestif/unsubscribe?s=42&amp;t=abc123\""));
    assert!(e
        .text
        .contains("\nhttps://news.example.com/digestif/unsubscribe?s=42&t=abc123\n"));
    assert!(!e.html.contains('\u{E000}') && !e.text.contains('\u{E000}'));

    let anon = t.personalise(&Personal {
        name: None,
        unsubscribe_url: "https://news.example.com/digestif/unsubscribe?s=7&t=x".into(),
    });
    assert!(anon.html.contains(">Bonjour,</p>"));
    assert!(anon.text.contains("\nBonjour,\n"));
    assert!(anon.text.contains("unsubscribe?s=7&t=x"));
    // Only the personal parts differ.
    assert_eq!(anon.subject, e.subject);
    assert_eq!(anon.preheader, e.preheader);
}

#[test]
fn a_blank_name_gets_the_greeting_without_a_name() {
    let t = render_variant(&fixture(), &Assets::builtin(), Locale::En, &[], SUBJECT);
    let e = t.personalise(&Personal {
        name: Some(" \r\n ".into()),
        unsubscribe_url: "https://e.com/u".into(),
    });
    assert!(e.text.contains("\nHello,\n"));
}

#[test]
fn feed_text_cannot_forge_a_personal_slot() {
    let mut d = fixture();
    d.stories[1].article.title = format!("a{SLOT_UNSUBSCRIBE}b{SLOT_GREETING}c");
    let e =
        render_variant(&d, &Assets::builtin(), Locale::Fr, &[], SUBJECT).personalise(&personal());
    assert_eq!(e.html.matches("unsubscribe?s=42").count(), 1);
    assert!(e.html.contains(">aunsubscribebgreetingc</a>"));
}

#[test]
fn followed_categories_come_first_after_pinned_stories_keeping_their_order() {
    let d = fixture();
    let t = render_variant(
        &d,
        &Assets::builtin(),
        Locale::Fr,
        &["planète".into(), "Sport".into()],
        SUBJECT,
    );
    let e = t.personalise(&personal());
    let pos = |title: &str| e.text.find(title).unwrap_or_else(|| panic!("{title}"));
    let order = [
        pos("Budget 2027"),    // pinned
        pos("Salt Lake City"), // Sport, followed, before Planète in the digest
        pos("Crise climatique"),
        pos("Première rencontre"),
        pos("Canada :"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
}

#[test]
fn the_html_passes_the_pre_send_body_rules() {
    for locale in Locale::ALL {
        let e = render(locale);
        let issues = lint_message(&e.html, &e.text, &[], 0);
        assert!(issues.is_empty(), "{locale}: {issues:?}");
        assert!(e.html.contains("role=\"presentation\""));
        assert!(e.html.contains("max-width:600px"));
        assert!(e.html.contains("width=\"600\""));
        assert!(e.html.contains("@media (prefers-color-scheme:dark)"));
        assert!(e
            .html
            .contains("<meta name=\"color-scheme\" content=\"light dark\">"));
    }
}

#[test]
fn a_logo_gets_its_alt_text() {
    let mut a = Assets::builtin();
    a.theme.logo.url = Some("https://news.example.com/logo.png".into());
    let e = render_variant(&fixture(), &a, Locale::Fr, &[], SUBJECT).personalise(&personal());
    assert!(e
        .html
        .contains("<img src=\"https://news.example.com/logo.png\" alt=\"L'Essentiel\""));
    assert!(!lint_message(&e.html, &e.text, &[], 0)
        .iter()
        .any(|i| i.rule == Rule::ImageWithoutAlt));
}

#[test]
fn a_ten_story_digest_stays_under_gmails_clipping_limit() {
    let mut d = fixture();
    let long_summary = "Un résumé de longueur maximale, coupé au dernier mot comme sur la page d’accueil du site, pour mesurer le pire cas réaliste ".repeat(3);
    d.stories = (0..10)
        .map(|i| {
            let mut s = story(
                &format!("Titre numéro {i} d’une histoire assez longue pour occuper deux lignes du courriel"),
                Some(&format!("https://news.example.com/rubrique/{i}/un-slug-d-article-assez-long-pour-le-pire-cas")),
                "Économie",
                "Le Quotidien",
                &long_summary,
                5,
            );
            s.article.also_in = vec!["Radio Info".into(), "Agence Monde".into(), "Sport Matin".into()];
            s
        })
        .collect();
    d.intro = Some("Un mot de la rédaction. ".repeat(40));
    let e =
        render_variant(&d, &Assets::builtin(), Locale::Fr, &[], SUBJECT).personalise(&personal());
    assert!(e.html.len() < MAX_HTML_BYTES, "{} bytes", e.html.len());
    assert!(lint_message(&e.html, &e.text, &[], 0).is_empty());
}

#[test]
fn the_preheader_is_hidden_and_leads_with_the_top_story() {
    let e = render(Locale::Fr);
    assert_eq!(
        e.preheader,
        "Budget 2027 : le gouvernement dévoile ses recettes — et l'essentiel de l'actualité en 4 min."
    );
    let i = e.html.find("display:none").unwrap();
    assert!(e.html[i..].contains("Budget 2027 : le gouvernement"));
    assert!(e.html.contains("&zwnj;&nbsp;"));
}

#[test]
fn the_footer_links_to_the_archive_and_names_the_publisher() {
    let e = render(Locale::Fr);
    assert!(e
        .html
        .contains("href=\"https://news.example.com/digestif/archive/2026-11-27\""));
    assert!(e
        .text
        .contains("\nhttps://news.example.com/digestif/archive/2026-11-27\n"));
    let theme = &Assets::builtin().theme;
    assert!(e.text.contains(&theme.footer.address));
}

#[test]
fn render_public_has_no_name_and_the_public_unsubscribe_page() {
    let e = render_public(&fixture(), &Assets::builtin(), SUBJECT);
    assert!(e.text.contains("\nBonjour,\n"));
    assert!(e
        .text
        .contains("\nhttps://news.example.com/digestif/unsubscribe\n"));
}

#[test]
fn long_html_lines_are_folded_at_spaces() {
    let line = format!("<p>{}</p>", "mot ".repeat(600));
    let folded = html::fold_long_lines(&line, 800);
    assert!(folded.lines().all(|l| l.len() <= 800));
    assert_eq!(folded.replace('\n', " "), line);
}

#[test]
fn a_kept_variant_reads_back_and_personalises_to_the_same_bytes() {
    let d = fixture();
    let t = render_variant(
        &d,
        &Assets::builtin(),
        Locale::Fr,
        &["Sport".into()],
        "{name} · {date}",
    );
    let back = EmailTemplate::from_json(&t.to_json()).unwrap();
    for p in [
        personal(),
        Personal {
            name: None,
            unsubscribe_url: "mailto:x".into(),
        },
    ] {
        assert_eq!(back.personalise(&p), t.personalise(&p));
    }
    assert_eq!(back.html_parts(), t.html_parts());
    assert_eq!(back.text_parts(), t.text_parts());
    let e = EmailTemplate::from_json("{}").err().unwrap().to_string();
    assert!(e.starts_with("not a kept variant: missing field"), "{e}");
}

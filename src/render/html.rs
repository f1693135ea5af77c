//! The HTML email, in small Maud components (header, intro, story, footer).
//!
//! Email clients are not browsers: the layout is a 600 px centred table
//! (`role="presentation"`), every style that can be inline is written inline from
//! the theme's checked values (that is our CSS inlining), and the one `<style>` in
//! the head holds only what cannot be inline: the dark-mode and mobile media queries.
//! Feed text only ever reaches the page through Maud's escaping, and only http(s)
//! URLs become links.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::assets::{Strings, Theme};
use super::{is_http_url, SLOT_GREETING, SLOT_UNSUBSCRIBE};
use crate::domain::Story;

/// Everything a component needs to know about the issue, already in words.
pub(crate) struct Ctx<'a> {
    pub theme: &'a Theme,
    pub strings: &'a Strings,
    pub lang: &'a str,
    pub name: &'a str,
    pub tagline: &'a str,
    /// "vendredi 27 novembre 2026"
    pub date: String,
    pub reading_minutes: u32,
    pub subject: &'a str,
    pub preheader: &'a str,
    /// `{base_url}/archive/{date}`
    pub view_url: String,
    /// Inline styles from the theme.
    pub styles: Styles,
}

impl Ctx<'_> {
    /// Feed and editor text as shown: in French, a no-break space keeps high
    /// punctuation (! ? ; « ») on its word's line, as French typography wants.
    fn prose<'s>(&self, s: &'s str) -> std::borrow::Cow<'s, str> {
        if self.lang != "fr" || !s.contains([' ', '«']) {
            return s.into();
        }
        s.replace(" !", "\u{a0}!")
            .replace(" ?", "\u{a0}?")
            .replace(" ;", "\u{a0};")
            .replace(" »", "\u{a0}»")
            .replace("« ", "«\u{a0}")
            .into()
    }
}

/// Inline styles, computed once per render from the theme.
pub(crate) struct Styles {
    body: String,
    surface: String,
    header_cell: String,
    name: String,
    tagline: String,
    dateline: String,
    intro_cell: String,
    greeting: String,
    intro: String,
    story_cell: String,
    category: String,
    title: String,
    title_link: String,
    summary: String,
    meta: String,
    footer_cell: String,
    footer_p: String,
    footer_link: String,
}

impl Styles {
    pub(crate) fn new(t: &Theme) -> Styles {
        let c = &t.colors;
        let (serif, sans) = (&t.fonts.serif, &t.fonts.sans);
        Styles {
            body: format!(
                "margin:0;padding:0 !important;mso-line-height-rule:exactly;background-color:{};",
                c.background
            ),
            surface: format!("background-color:{};", c.surface),
            header_cell: format!(
                "padding:32px 32px 18px;border-bottom:3px solid {};text-align:left;",
                c.accent
            ),
            name: format!(
                "margin:0;font-family:{serif};font-size:30px;line-height:36px;font-weight:bold;color:{};",
                c.text
            ),
            tagline: format!(
                "margin:4px 0 0;font-family:{sans};font-size:14px;line-height:20px;color:{};",
                c.muted
            ),
            dateline: format!(
                "margin:14px 0 0;font-family:{sans};font-size:13px;line-height:18px;color:{};",
                c.muted
            ),
            intro_cell: "padding:26px 32px 6px;text-align:left;".into(),
            greeting: format!(
                "margin:0 0 10px;font-family:{serif};font-size:18px;line-height:26px;color:{};",
                c.text
            ),
            intro: format!(
                "margin:0 0 12px;font-family:{serif};font-size:17px;line-height:26px;font-style:italic;color:{};",
                c.text
            ),
            story_cell: format!(
                "padding:22px 32px;border-top:1px solid {};text-align:left;",
                c.rule
            ),
            category: format!(
                "margin:0 0 6px;font-family:{sans};font-size:12px;line-height:16px;font-weight:bold;letter-spacing:1px;text-transform:uppercase;color:{};",
                c.accent
            ),
            title: format!(
                "margin:0 0 8px;font-family:{serif};font-size:22px;line-height:28px;font-weight:bold;color:{};",
                c.text
            ),
            title_link: format!("color:{};text-decoration:none;", c.text),
            summary: format!(
                "margin:0 0 10px;font-family:{sans};font-size:16px;line-height:24px;color:{};",
                c.text
            ),
            meta: format!(
                "margin:0;font-family:{sans};font-size:13px;line-height:19px;color:{};",
                c.muted
            ),
            footer_cell: format!(
                "padding:24px 32px 30px;border-top:1px solid {};background-color:{};text-align:center;",
                c.rule, c.footer_background
            ),
            footer_p: format!(
                "margin:0 0 8px;font-family:{sans};font-size:12px;line-height:18px;color:{};",
                c.muted
            ),
            footer_link: format!("color:{};text-decoration:underline;", c.muted),
        }
    }
}

/// The head's `<style>`: only what cannot be inline.
fn head_css(t: &Theme) -> String {
    let d = &t.dark;
    let dark_rules = |p: &str| {
        format!(
            "{p}.em-bg{{background-color:{bg} !important;}}\
             {p}.em-surface{{background-color:{surface} !important;}}\
             {p}.em-text,{p}.em-text a{{color:{text} !important;}}\
             {p}.em-muted,{p}.em-muted a{{color:{muted} !important;}}\
             {p}.em-accent{{color:{accent} !important;}}\
             {p}.em-header{{border-bottom-color:{accent} !important;}}\
             {p}.em-rule{{border-top-color:{rule} !important;}}\
             {p}.em-footer{{background-color:{footer} !important;}}",
            bg = d.background,
            surface = d.surface,
            text = d.text,
            muted = d.muted,
            accent = d.accent,
            rule = d.rule,
            footer = d.footer_background,
        )
    };
    format!(
        ":root{{color-scheme:light dark;supported-color-schemes:light dark;}}\n\
         html,body{{margin:0 auto !important;padding:0 !important;height:100% !important;width:100% !important;}}\n\
         *{{-ms-text-size-adjust:100%;-webkit-text-size-adjust:100%;}}\n\
         table,td{{mso-table-lspace:0pt !important;mso-table-rspace:0pt !important;}}\n\
         table{{border-spacing:0 !important;border-collapse:collapse !important;margin:0 auto !important;}}\n\
         img{{-ms-interpolation-mode:bicubic;border:0;}}\n\
         a[x-apple-data-detectors]{{color:inherit !important;text-decoration:none !important;}}\n\
         @media screen and (max-width:600px){{\
         .em-pad{{padding-left:18px !important;padding-right:18px !important;}}\
         .em-name{{font-size:26px !important;line-height:32px !important;}}\
         .em-title{{font-size:20px !important;line-height:26px !important;}}}}\n\
         @media (prefers-color-scheme:dark){{{}}}\n\
         {}\n",
        dark_rules(""),
        // Outlook.com's dark mode marks the body with data-ogsc.
        dark_rules("[data-ogsc] "),
    )
}

/// The link target if `url` may be clicked: http(s) only (defence in depth: the
/// articles stage already drops other schemes).
fn safe_href(url: Option<&str>) -> Option<&str> {
    url.filter(|u| is_http_url(u))
}

/// Name (or logo), tagline, the date and the digest's reading time.
pub(crate) fn header(ctx: &Ctx) -> Markup {
    let s = &ctx.styles;
    let logo = &ctx.theme.logo;
    let reading = ctx
        .strings
        .digest_reading_time
        .replace("{n}", &ctx.reading_minutes.to_string());
    html! {
        tr {
            td.em-pad.em-header style=(s.header_cell) {
                @if let Some(src) = safe_href(logo.url.as_deref()) {
                    img src=(src) alt=(logo.alt) width=(logo.width)
                        style={"display:block;height:auto;border:0;max-width:" (logo.width) "px;width:100%;"};
                } @else {
                    h1.em-text.em-name style=(s.name) { (ctx.name) }
                }
                @if !ctx.tagline.is_empty() {
                    p.em-muted style=(s.tagline) { (ctx.tagline) }
                }
                p.em-muted style=(s.dateline) {
                    (capitalise(&ctx.date)) " · " (reading)
                }
            }
        }
    }
}

/// The greeting (a personal slot) and the editor's word, if any.
pub(crate) fn intro(ctx: &Ctx, intro: Option<&str>) -> Markup {
    let s = &ctx.styles;
    let paragraphs: Vec<&str> = intro
        .map(|i| {
            i.split("\n\n")
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default();
    html! {
        tr {
            td.em-pad style=(s.intro_cell) {
                p.em-text style=(s.greeting) { (PreEscaped(SLOT_GREETING)) }
                @for p in &paragraphs {
                    p.em-text style=(s.intro) { (ctx.prose(p)) }
                }
            }
        }
    }
}

/// One story: category, linked title, summary, source and reading time, "also in".
pub(crate) fn story(ctx: &Ctx, story: &Story) -> Markup {
    let s = &ctx.styles;
    let a = &story.article;
    let reading = ctx
        .strings
        .story_reading_time
        .replace("{n}", &a.reading_minutes.to_string());
    html! {
        tr {
            td.em-pad.em-rule style=(s.story_cell) {
                p.em-accent style=(s.category) { (a.category) }
                h2.em-text.em-title style=(s.title) {
                    @if let Some(href) = safe_href(a.url.as_deref()) {
                        a href=(href) style=(s.title_link) { (ctx.prose(&a.title)) }
                    } @else {
                        (ctx.prose(&a.title))
                    }
                }
                @if !a.summary.is_empty() {
                    p.em-text style=(s.summary) { (ctx.prose(&a.summary)) }
                }
                p.em-muted style=(s.meta) {
                    @if !a.source.is_empty() { (a.source) " · " }
                    span style="white-space:nowrap;" { (reading) }
                }
                @if !a.also_in.is_empty() {
                    p.em-muted style={(s.meta) "margin-top:2px;font-style:italic;"} {
                        (ctx.strings.also_in.replace("{sources}", &a.also_in.join(", ")))
                    }
                }
            }
        }
    }
}

/// View in browser, unsubscribe (a personal slot), why you get this, the publisher.
pub(crate) fn footer(ctx: &Ctx) -> Markup {
    let s = &ctx.styles;
    let f = &ctx.theme.footer;
    html! {
        tr {
            td.em-pad.em-footer.em-rule style=(s.footer_cell) {
                p.em-muted style=(s.footer_p) {
                    a href=(ctx.view_url) style=(s.footer_link) { (ctx.strings.view_in_browser) }
                    " · "
                    a href=(PreEscaped(SLOT_UNSUBSCRIBE)) style=(s.footer_link) { (ctx.strings.unsubscribe) }
                }
                p.em-muted style=(s.footer_p) {
                    (ctx.strings.why_received.replace("{name}", ctx.name))
                }
                p.em-muted style={(s.footer_p) "margin-bottom:0;"} {
                    (f.publisher) br; (f.address)
                }
            }
        }
    }
}

/// The hidden preheader: the line inbox lists show after the subject, followed by
/// invisible padding so that the body's first words don't leak into it.
pub(crate) fn preheader(text: &str) -> Markup {
    const HIDDEN: &str = "display:none;font-size:1px;line-height:1px;max-height:0px;max-width:0px;opacity:0;overflow:hidden;mso-hide:all;font-family:sans-serif;";
    html! {
        div style=(HIDDEN) { (text) }
        div style=(HIDDEN) { (PreEscaped("&zwnj;&nbsp;".repeat(40))) }
    }
}

/// The whole document.
pub(crate) fn document(ctx: &Ctx, intro_text: Option<&str>, stories: &[Story]) -> String {
    let s = &ctx.styles;
    let markup = html! {
        (DOCTYPE)
        html lang=(ctx.lang) xmlns="http://www.w3.org/1999/xhtml" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="X-UA-Compatible" content="IE=edge";
                meta name="x-apple-disable-message-reformatting";
                meta name="format-detection" content="telephone=no,address=no,email=no,date=no,url=no";
                meta name="color-scheme" content="light dark";
                meta name="supported-color-schemes" content="light dark";
                title { (ctx.subject) }
                (PreEscaped("<!--[if mso]><style>*{font-family:Arial,sans-serif !important;}</style><![endif]-->"))
                style { (PreEscaped(head_css(ctx.theme))) }
            }
            body.em-bg width="100%" style=(s.body) {
                div.em-bg role="article" aria-roledescription="email" aria-label=(ctx.subject) lang=(ctx.lang)
                    style={"width:100%;background-color:" (ctx.theme.colors.background) ";"} {
                    (preheader(ctx.preheader))
                    (PreEscaped("<!--[if mso]><table role=\"presentation\" align=\"center\" cellspacing=\"0\" cellpadding=\"0\" border=\"0\" width=\"600\"><tr><td><![endif]-->"))
                    div style="max-width:600px;margin:0 auto;padding:16px 0;" {
                        table.em-surface role="presentation" align="center" cellspacing="0" cellpadding="0" border="0" width="100%"
                            style={"max-width:600px;margin:0 auto;" (s.surface)} {
                            (header(ctx))
                            (intro(ctx, intro_text))
                            @for st in stories {
                                (story(ctx, st))
                            }
                            (footer(ctx))
                        }
                    }
                    (PreEscaped("<!--[if mso]></td></tr></table><![endif]-->"))
                }
            }
        }
    };
    fold_long_lines(&break_lines(&markup.into_string()), 800)
}

/// Starts a new line before block-level tags, so the source reads well in a
/// snapshot and stays far from SMTP's 998-character line limit. Only whitespace
/// between blocks is added; escaped feed text holds no `<`.
fn break_lines(html: &str) -> String {
    const BLOCKS: [&str; 17] = [
        "<head", "</head", "<meta", "<title", "<style", "<body", "</body", "</html", "<div",
        "</div", "<table", "</table", "<tr", "</tr", "<p", "<h1", "<h2",
    ];
    let mut out = String::with_capacity(html.len() + html.len() / 20);
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        let (before, tag) = rest.split_at(i);
        out.push_str(before);
        let starts_block = BLOCKS
            .iter()
            .any(|b| tag.starts_with(b) && tag[b.len()..].starts_with(['>', ' ', '/']))
            || tag.starts_with("<!--");
        if starts_block && !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push('<');
        rest = &tag[1..];
    }
    out.push_str(rest);
    out
}

/// Breaks lines longer than `max` bytes at their last space before `max` (a space
/// and a newline are the same whitespace in HTML), so a long intro or summary can't
/// reach SMTP's 998-character line limit.
pub(crate) fn fold_long_lines(html: &str, max: usize) -> String {
    let mut out = String::with_capacity(html.len() + 16);
    for (n, line) in html.split('\n').enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let mut rest = line;
        while rest.len() > max {
            let mut cut = max;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            match rest[..cut].rfind(' ') {
                Some(sp) if sp > 0 => {
                    out.push_str(&rest[..sp]);
                    out.push('\n');
                    rest = &rest[sp + 1..];
                }
                _ => break,
            }
        }
        out.push_str(rest);
    }
    out
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Article;
    use crate::render::Assets;
    use chrono::{TimeZone, Utc};

    fn with_ctx(f: impl FnOnce(&Ctx)) {
        let a = Assets::builtin();
        let ctx = Ctx {
            theme: &a.theme,
            strings: &a.fr,
            lang: "fr",
            name: "L'Essentiel",
            tagline: "La newsletter qui vous briefe en 5 min",
            date: "vendredi 27 novembre 2026".into(),
            reading_minutes: 4,
            subject: "s",
            preheader: "p",
            view_url: "https://e.com/archive/2026-11-27".into(),
            styles: Styles::new(&a.theme),
        };
        f(&ctx)
    }

    fn a_story(url: Option<&str>) -> Story {
        Story {
            article: Article {
                title: "Titre".into(),
                url: url.map(String::from),
                source: "Le Quotidien".into(),
                category: "Monde".into(),
                published: Utc.with_ymd_and_hms(2026, 11, 27, 5, 0, 0).unwrap(),
                summary: "Résumé…".into(),
                reading_minutes: 3,
                source_weight: 1.0,
                also_in: vec![],
            },
            score: 1.0,
            pinned: false,
        }
    }

    #[test]
    fn the_header_has_the_name_tagline_date_and_reading_time() {
        with_ctx(|ctx| {
            let h = header(ctx).into_string();
            assert!(
                h.contains(">L&#39;Essentiel</h1>") || h.contains(">L'Essentiel</h1>"),
                "{h}"
            );
            assert!(h.contains("La newsletter qui vous briefe en 5 min"));
            assert!(h.contains("Vendredi 27 novembre 2026 · ≈ 4 min de lecture"));
        });
    }

    #[test]
    fn the_intro_holds_the_greeting_slot_and_one_paragraph_per_block() {
        with_ctx(|ctx| {
            let h = intro(ctx, Some("Un.\n\nDeux.")).into_string();
            assert!(h.contains(SLOT_GREETING));
            assert_eq!(h.matches("<p").count(), 3);
            let h = intro(ctx, None).into_string();
            assert_eq!(h.matches("<p").count(), 1);
        });
    }

    #[test]
    fn a_story_links_its_title_only_for_http_urls() {
        with_ctx(|ctx| {
            let h = story(ctx, &a_story(Some("https://e.com/a"))).into_string();
            assert!(h.contains("<a href=\"https://e.com/a\""));
            assert!(h.contains("Temps de lecture : 3 min"));
            assert!(h.contains(">Monde</p>"));
            assert!(!h.contains("Aussi dans"));
            for bad in [
                "javascript:alert(1)",
                "data:text/html,x",
                "/relative",
                "ftp://e.com/x",
            ] {
                let h = story(ctx, &a_story(Some(bad))).into_string();
                assert!(!h.contains("<a "), "{bad} was linked");
            }
        });
    }

    #[test]
    fn french_prose_keeps_high_punctuation_with_its_word() {
        with_ctx(|ctx| {
            assert_eq!(ctx.prose("Bonne lecture !"), "Bonne lecture\u{a0}!");
            assert_eq!(
                ctx.prose("« Oui » ; non ?"),
                "«\u{a0}Oui\u{a0}»\u{a0}; non\u{a0}?"
            );
            // The colon is left alone: titles are matched verbatim elsewhere.
            assert_eq!(ctx.prose("Budget : oui"), "Budget : oui");
        });
    }

    #[test]
    fn the_footer_has_both_links_and_the_postal_address() {
        with_ctx(|ctx| {
            let h = footer(ctx).into_string();
            assert!(h.contains("href=\"https://e.com/archive/2026-11-27\""));
            assert!(h.contains(&format!("href=\"{SLOT_UNSUBSCRIBE}\"")));
            assert!(h.contains("Se désabonner"));
            assert!(h.contains("75002 Paris"));
        });
    }
}

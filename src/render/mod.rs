//! Maud HTML email and its plain-text twin. No I/O: the words and colours come in
//! as [`Assets`] (from `templates/`, with built-in copies). Rendered once per
//! variant (locale × followed categories), personalised per subscriber by cheap
//! substitution into precomputed slots.

mod assets;
mod html;
pub mod text;

pub use assets::{Assets, AssetsError, Colors, Fonts, Footer, Logo, Strings, Theme};

use crate::domain::{Digest, Locale, Story};

/// Marks where a subscriber's greeting goes. Private-use characters: they are
/// stripped from every input, so only the renderer can write them.
pub(crate) const SLOT_GREETING: &str = "\u{E000}greeting\u{E001}";
/// Marks where a subscriber's unsubscribe URL goes.
pub(crate) const SLOT_UNSUBSCRIBE: &str = "\u{E000}unsubscribe\u{E001}";

/// True for an absolute http(s) URL with a host: the only links we make clickable.
pub fn is_http_url(s: &str) -> bool {
    match url::Url::parse(s) {
        Ok(u) => matches!(u.scheme(), "http" | "https") && u.host_str().is_some(),
        Err(_) => false,
    }
}

/// The per-subscriber parts of a message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Personal {
    /// Used in the greeting when known.
    pub name: Option<String>,
    /// `{base_url}/unsubscribe?token=…`
    pub unsubscribe_url: String,
}

/// A finished message body pair.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedEmail {
    pub subject: String,
    pub preheader: String,
    pub html: String,
    pub text: String,
}

/// Where a personal value goes in a body (see [`EmailTemplate::html_parts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Greeting,
    Unsubscribe,
}

/// A body cut at its slots: `literals.len() == slots.len() + 1`.
#[derive(Debug, Clone)]
struct Parts {
    literals: Vec<String>,
    slots: Vec<Slot>,
    len: usize,
}

impl Parts {
    fn split(body: &str) -> Parts {
        let mut literals = Vec::new();
        let mut slots = Vec::new();
        let mut rest = body;
        loop {
            let g = rest.find(SLOT_GREETING).map(|i| (i, Slot::Greeting));
            let u = rest.find(SLOT_UNSUBSCRIBE).map(|i| (i, Slot::Unsubscribe));
            let next = match (g, u) {
                (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
                (a, b) => a.or(b),
            };
            let Some((i, slot)) = next else { break };
            literals.push(rest[..i].to_string());
            slots.push(slot);
            let marker = match slot {
                Slot::Greeting => SLOT_GREETING,
                Slot::Unsubscribe => SLOT_UNSUBSCRIBE,
            };
            rest = &rest[i + marker.len()..];
        }
        literals.push(rest.to_string());
        let len = literals.iter().map(String::len).sum();
        Parts {
            literals,
            slots,
            len,
        }
    }

    fn fill(&self, greeting: &str, unsubscribe: &str) -> String {
        let mut out = String::with_capacity(self.len + 2 * (greeting.len() + unsubscribe.len()));
        for (i, lit) in self.literals.iter().enumerate() {
            out.push_str(lit);
            match self.slots.get(i) {
                Some(Slot::Greeting) => out.push_str(greeting),
                Some(Slot::Unsubscribe) => out.push_str(unsubscribe),
                None => {}
            }
        }
        out
    }
}

/// The greeting with and without a name, split around `{name}`.
#[derive(Debug, Clone)]
struct Greeting {
    anonymous: String,
    before_name: String,
    after_name: String,
}

impl Greeting {
    fn new(s: &Strings) -> Greeting {
        let (before, after) = s
            .greeting_named
            .split_once("{name}")
            .expect("checked when the strings were loaded");
        Greeting {
            anonymous: s.greeting.clone(),
            before_name: before.to_string(),
            after_name: after.to_string(),
        }
    }
}

/// A variant rendered once, with slots for the personal parts.
#[derive(Debug, Clone)]
pub struct EmailTemplate {
    subject: String,
    preheader: String,
    html: Parts,
    text: Parts,
    greeting: Greeting,
    /// Used when a personal unsubscribe URL is not http(s).
    public_unsubscribe: String,
}

impl EmailTemplate {
    /// The subject line (no CR/LF), the same for every subscriber of the variant.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The HTML body cut at its personal slots: `literals.len() == slots.len() + 1`,
    /// the body is `literals[0] slots[0] literals[1] …`. For encoders that prepare
    /// the parts every subscriber shares once.
    pub fn html_parts(&self) -> (&[String], &[Slot]) {
        (&self.html.literals, &self.html.slots)
    }

    /// The text body cut at its personal slots, like [`EmailTemplate::html_parts`].
    pub fn text_parts(&self) -> (&[String], &[Slot]) {
        (&self.text.literals, &self.text.slots)
    }

    /// What [`EmailTemplate::personalise`] puts in the slots for `p`.
    pub fn slot_values(&self, p: &Personal) -> SlotValues {
        let name = p.name.as_deref().map(clean_name).filter(|n| !n.is_empty());
        let g = &self.greeting;
        let (html_greeting, text_greeting) = match &name {
            Some(n) => {
                let plain = format!("{}{n}{}", g.before_name, g.after_name);
                let html = format!(
                    "{}{}{}",
                    html_escape::encode_text(&g.before_name),
                    html_escape::encode_safe(n),
                    html_escape::encode_text(&g.after_name)
                );
                (html, text::greeting_lines(&plain))
            }
            None => (
                html_escape::encode_text(&g.anonymous).into_owned(),
                text::greeting_lines(&g.anonymous),
            ),
        };
        let unsubscribe = if is_http_url(&p.unsubscribe_url) && !has_control(&p.unsubscribe_url) {
            p.unsubscribe_url.as_str()
        } else {
            self.public_unsubscribe.as_str()
        };
        SlotValues {
            html_greeting,
            html_unsubscribe: html_escape::encode_double_quoted_attribute(unsubscribe).into_owned(),
            text_greeting,
            text_unsubscribe: unsubscribe.to_string(),
        }
    }

    /// Fills the personal slots (name, unsubscribe link). Cheap: no re-rendering.
    pub fn personalise(&self, p: &Personal) -> RenderedEmail {
        let v = self.slot_values(p);
        RenderedEmail {
            subject: self.subject.clone(),
            preheader: self.preheader.clone(),
            html: self.html.fill(&v.html_greeting, &v.html_unsubscribe),
            text: self.text.fill(&v.text_greeting, &v.text_unsubscribe),
        }
    }
}

/// An [`EmailTemplate`] as text, with its slot markers: what the frozen issue
/// keeps of each variant, so that every sender fills the same bytes.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeptTemplate {
    subject: String,
    preheader: String,
    html: String,
    text: String,
    greeting: String,
    greeting_before_name: String,
    greeting_after_name: String,
    public_unsubscribe: String,
}

/// A kept variant that does not read back as one (a field missing, not JSON).
#[derive(Debug, thiserror::Error)]
#[error("not a kept variant: {error}")]
pub struct KeptVariantError {
    pub error: serde_json::Error,
}

impl EmailTemplate {
    /// The variant as JSON, read back by [`EmailTemplate::from_json`].
    pub fn to_json(&self) -> String {
        let kept = KeptTemplate {
            subject: self.subject.clone(),
            preheader: self.preheader.clone(),
            html: self.html.fill(SLOT_GREETING, SLOT_UNSUBSCRIBE),
            text: self.text.fill(SLOT_GREETING, SLOT_UNSUBSCRIBE),
            greeting: self.greeting.anonymous.clone(),
            greeting_before_name: self.greeting.before_name.clone(),
            greeting_after_name: self.greeting.after_name.clone(),
            public_unsubscribe: self.public_unsubscribe.clone(),
        };
        serde_json::to_string(&kept).expect("strings serialise")
    }

    /// A variant kept by [`EmailTemplate::to_json`].
    pub fn from_json(json: &str) -> Result<EmailTemplate, KeptVariantError> {
        let k: KeptTemplate =
            serde_json::from_str(json).map_err(|error| KeptVariantError { error })?;
        Ok(EmailTemplate {
            subject: k.subject,
            preheader: k.preheader,
            html: Parts::split(&k.html),
            text: Parts::split(&k.text),
            greeting: Greeting {
                anonymous: k.greeting,
                before_name: k.greeting_before_name,
                after_name: k.greeting_after_name,
            },
            public_unsubscribe: k.public_unsubscribe,
        })
    }
}

/// The personal values of one subscriber, escaped for each body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotValues {
    pub html_greeting: String,
    pub html_unsubscribe: String,
    pub text_greeting: String,
    pub text_unsubscribe: String,
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Plain text safe to place anywhere: no control characters, no slot markers,
/// whitespace folded.
fn clean(s: &str) -> String {
    s.replace(['\u{E000}', '\u{E001}'], "")
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Like [`clean`], but paragraphs (blank lines) are kept: the editor's intro.
fn clean_paragraphs(s: &str) -> String {
    s.replace("\r\n", "\n")
        .split("\n\n")
        .map(clean)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn clean_name(s: &str) -> String {
    clean(s).chars().take(80).collect()
}

/// The stories of a variant: pinned ones on top in their order, then the ones in
/// the followed categories, then the rest, each group keeping the digest's order.
fn order_stories(stories: &[Story], follow: &[String]) -> Vec<Story> {
    let follow: Vec<String> = follow.iter().map(|c| c.trim().to_lowercase()).collect();
    let follows = |s: &Story| follow.contains(&s.article.category.trim().to_lowercase());
    let rank = |s: &Story| {
        if s.pinned {
            0
        } else if follows(s) {
            1
        } else {
            2
        }
    };
    let mut out: Vec<Story> = stories.to_vec();
    out.sort_by_key(rank); // stable: keeps the order within each group
    for s in &mut out {
        let a = &mut s.article;
        a.title = clean(&a.title);
        a.summary = clean(&a.summary);
        a.category = clean(&a.category);
        a.source = clean(&a.source);
        a.also_in = a.also_in.iter().map(|x| clean(x)).collect();
    }
    out
}

/// Fills the subject template; the result holds no CR/LF and no dangling separator.
fn subject_line(template: &str, name: &str, date: &str, top_title: &str) -> String {
    let s = clean(
        &template
            .replace("{name}", name)
            .replace("{date}", date)
            .replace("{top_title}", top_title),
    );
    s.trim_matches(|c: char| c.is_whitespace() || "·-–—:|,".contains(c))
        .to_string()
}

/// Renders `digest` for subscribers reading `locale` who follow `follow` (their
/// categories come first). `subject_template` uses `{name}`, `{date}`, `{top_title}`.
pub fn render_variant(
    digest: &Digest,
    assets: &Assets,
    locale: Locale,
    follow: &[String],
    subject_template: &str,
) -> EmailTemplate {
    let strings = assets.strings(locale);
    let stories = order_stories(&digest.stories, follow);
    let name = clean(&digest.name);
    let tagline = clean(&digest.tagline);
    let intro = digest.intro.as_deref().map(clean_paragraphs);
    let date = strings.format_date(digest.date);
    let top_title = stories
        .first()
        .map(|s| s.article.title.as_str())
        .unwrap_or("");
    let subject = subject_line(subject_template, &name, &date, top_title);
    let preheader = clean(
        strings
            .preheader
            .replace("{top_title}", top_title)
            .replace("{count}", &stories.len().to_string())
            .replace("{n}", &digest.reading_minutes.to_string())
            .trim_start_matches([' ', '—', '-', '·']),
    );
    let base = digest.base_url.trim_end_matches('/');
    let ctx = html::Ctx {
        theme: &assets.theme,
        strings,
        lang: locale.code(),
        name: &name,
        tagline: &tagline,
        date,
        reading_minutes: digest.reading_minutes,
        subject: &subject,
        preheader: &preheader,
        view_url: format!("{base}/archive/{}", digest.date.format("%Y-%m-%d")),
        styles: html::Styles::new(&assets.theme),
    };
    let html_body = html::document(&ctx, intro.as_deref(), &stories);
    let text_body = text::document(&ctx, intro.as_deref(), &stories);
    EmailTemplate {
        html: Parts::split(&html_body),
        text: Parts::split(&text_body),
        greeting: Greeting::new(strings),
        public_unsubscribe: format!("{base}/unsubscribe"),
        subject,
        preheader,
    }
}

/// The public version (archive, "view in browser"): no name, no token; the
/// unsubscribe link points at `{base_url}/unsubscribe`.
pub fn render_public(digest: &Digest, assets: &Assets, subject_template: &str) -> RenderedEmail {
    let t = render_variant(digest, assets, digest.locale, &[], subject_template);
    t.personalise(&Personal {
        name: None,
        unsubscribe_url: format!("{}/unsubscribe", digest.base_url.trim_end_matches('/')),
    })
}

#[cfg(test)]
mod tests;

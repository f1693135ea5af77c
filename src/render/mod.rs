//! Maud HTML email and its plain-text twin. No I/O: the words and colours come in
//! as [`Assets`] (from `templates/`, with built-in copies). Rendered once per
//! variant (locale × followed categories), personalised per subscriber by cheap
//! substitution.

use crate::domain::{Digest, Locale};

/// Theme and strings of every locale.
#[derive(Debug, Clone)]
pub struct Assets {}

impl Assets {
    /// The copies built into the binary.
    pub fn builtin() -> Assets {
        todo!("Assets::builtin")
    }

    /// Reads `theme.toml`, `fr.toml`, `en.toml` from `dir`; errors name the file and key.
    pub fn load(dir: &std::path::Path) -> Result<Assets, String> {
        let _ = dir;
        todo!("Assets::load")
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

/// A variant rendered once, with slots for the personal parts.
#[derive(Debug, Clone)]
pub struct EmailTemplate {}

impl EmailTemplate {
    /// Fills the personal slots (name, unsubscribe link). Cheap: no re-rendering.
    pub fn personalise(&self, p: &Personal) -> RenderedEmail {
        let _ = p;
        todo!("personalise")
    }
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
    let _ = (digest, assets, locale, follow, subject_template);
    todo!("render_variant")
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

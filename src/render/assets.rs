//! The theme and the words of each locale, read from `templates/` (or the copies
//! built into the binary) and checked once, so that rendering cannot fail.

use std::path::Path;

use chrono::{Datelike, NaiveDate};
use serde::Deserialize;

use crate::domain::Locale;

/// Colours of one scheme (light or dark), each a checked `#rgb` / `#rrggbb`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Colors {
    pub background: String,
    pub surface: String,
    pub text: String,
    pub muted: String,
    pub accent: String,
    pub rule: String,
    pub footer_background: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Fonts {
    pub serif: String,
    pub sans: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Logo {
    /// An http(s) image URL; without it the newsletter's name is shown as text.
    #[serde(default)]
    pub url: Option<String>,
    pub alt: String,
    #[serde(default = "default_logo_width")]
    pub width: u32,
}

fn default_logo_width() -> u32 {
    180
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Footer {
    pub publisher: String,
    /// Postal address of the publisher (required in commercial email by CAN-SPAM and LCEN).
    pub address: String,
}

/// `templates/theme.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Theme {
    pub colors: Colors,
    pub dark: Colors,
    pub fonts: Fonts,
    pub logo: Logo,
    pub footer: Footer,
}

/// `templates/<locale>.toml`: every word the email says.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Strings {
    /// "Bonjour,"
    pub greeting: String,
    /// "Bonjour {name},"
    pub greeting_named: String,
    /// "≈ {n} min de lecture"
    pub digest_reading_time: String,
    /// "Temps de lecture : {n} min"
    pub story_reading_time: String,
    /// "Aussi dans : {sources}"
    pub also_in: String,
    pub view_in_browser: String,
    pub unsubscribe: String,
    /// "Vous recevez cet e-mail car… {name}"
    pub why_received: String,
    /// `{top_title}`, `{count}`, `{n}`
    pub preheader: String,
    /// "Liens :"
    pub links_heading: String,
    /// "{weekday} {day} {month} {year}"
    pub date: String,
    /// How the first day of a month is written ("1er" in French).
    pub first_day: String,
    /// Monday first.
    pub weekdays: Vec<String>,
    /// January first.
    pub months: Vec<String>,
}

impl Strings {
    /// The date in this locale's words: "vendredi 27 novembre 2026".
    pub fn format_date(&self, date: NaiveDate) -> String {
        let day = if date.day() == 1 {
            self.first_day.clone()
        } else {
            date.day().to_string()
        };
        self.date
            .replace(
                "{weekday}",
                &self.weekdays[date.weekday().num_days_from_monday() as usize],
            )
            .replace("{day}", &day)
            .replace("{month}", &self.months[date.month0() as usize])
            .replace("{year}", &date.year().to_string())
    }

    fn check(&self, file: &str) -> Result<(), AssetsError> {
        let needs: [(&str, &str, &[&str]); 6] = [
            ("greeting_named", &self.greeting_named, &["{name}"]),
            ("digest_reading_time", &self.digest_reading_time, &["{n}"]),
            ("story_reading_time", &self.story_reading_time, &["{n}"]),
            ("also_in", &self.also_in, &["{sources}"]),
            ("date", &self.date, &["{day}", "{month}", "{year}"]),
            ("preheader", &self.preheader, &[]),
        ];
        for (key, value, placeholders) in needs {
            for p in placeholders {
                if !value.contains(p) {
                    return Err(AssetsError::invalid(
                        file,
                        format!(
                            "key `{key}` = {value:?} must contain {p}; add it where the value goes"
                        ),
                    ));
                }
            }
        }
        if self.greeting_named.matches("{name}").count() != 1 {
            return Err(AssetsError::invalid(
                file,
                "key `greeting_named` must contain {name} exactly once".to_string(),
            ));
        }
        if self.weekdays.len() != 7 {
            return Err(AssetsError::invalid(
                file,
                format!(
                    "key `weekdays` has {} names; give 7, Monday first",
                    self.weekdays.len()
                ),
            ));
        }
        if self.months.len() != 12 {
            return Err(AssetsError::invalid(
                file,
                format!(
                    "key `months` has {} names; give 12, January first",
                    self.months.len()
                ),
            ));
        }
        Ok(())
    }
}

impl Theme {
    fn check(&self, file: &str) -> Result<(), AssetsError> {
        for (scheme, c) in [("colors", &self.colors), ("dark", &self.dark)] {
            for (key, v) in [
                ("background", &c.background),
                ("surface", &c.surface),
                ("text", &c.text),
                ("muted", &c.muted),
                ("accent", &c.accent),
                ("rule", &c.rule),
                ("footer_background", &c.footer_background),
            ] {
                if !is_hex_colour(v) {
                    return Err(AssetsError::invalid(
                        file,
                        format!(
                            "key `{scheme}.{key}` = {v:?} is not a colour; write it as #rrggbb"
                        ),
                    ));
                }
            }
        }
        for (key, v) in [("serif", &self.fonts.serif), ("sans", &self.fonts.sans)] {
            // Written into style="…" attributes: nothing that could end the declaration.
            if v.trim().is_empty() || v.contains(['"', ';', '<', '>', '{', '}', '\\', '\n', '\r']) {
                return Err(AssetsError::invalid(
                    file,
                    format!(
                    "key `fonts.{key}` = {v:?} is not a font stack; use names separated by commas"
                ),
                ));
            }
        }
        if let Some(url) = &self.logo.url {
            if !super::is_http_url(url) {
                return Err(AssetsError::invalid(
                    file,
                    format!("key `logo.url` = {url:?} is not an http(s) URL"),
                ));
            }
        }
        if self.logo.alt.trim().is_empty() {
            return Err(AssetsError::invalid(
                file,
                "key `logo.alt` is empty; describe the logo (usually the newsletter's name)"
                    .to_string(),
            ));
        }
        Ok(())
    }
}

fn is_hex_colour(v: &str) -> bool {
    let Some(hex) = v.strip_prefix('#') else {
        return false;
    };
    matches!(hex.len(), 3 | 6) && hex.chars().all(|c| c.is_ascii_hexdigit())
}

/// A templates file that cannot be used: the message names the file (and the key).
#[derive(Debug, thiserror::Error)]
pub enum AssetsError {
    #[error("cannot read {}: {error}; copy it from the project's templates/ folder", path.display())]
    Read {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    /// Not TOML, an unknown or missing key, or a value that cannot be used.
    #[error("{file}: {problem}")]
    Invalid { file: String, problem: String },
}

impl AssetsError {
    fn invalid(file: &str, problem: String) -> AssetsError {
        AssetsError::Invalid {
            file: file.to_string(),
            problem,
        }
    }
}

/// Theme and strings of every locale.
#[derive(Debug, Clone, PartialEq)]
pub struct Assets {
    pub theme: Theme,
    pub fr: Strings,
    pub en: Strings,
}

const THEME: &str = include_str!("../../templates/theme.toml");
const FR: &str = include_str!("../../templates/fr.toml");
const EN: &str = include_str!("../../templates/en.toml");

impl Assets {
    /// The copies built into the binary.
    pub fn builtin() -> Assets {
        Assets::parse(THEME, FR, EN).expect("the built-in templates are valid (tested)")
    }

    /// Reads `theme.toml`, `fr.toml`, `en.toml` from `dir`; errors name the file and key.
    pub fn load(dir: &Path) -> Result<Assets, AssetsError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|error| AssetsError::Read { path, error })
        };
        let (theme, fr, en) = (read("theme.toml")?, read("fr.toml")?, read("en.toml")?);
        Assets::parse_named(
            (&dir.join("theme.toml").display().to_string(), &theme),
            (&dir.join("fr.toml").display().to_string(), &fr),
            (&dir.join("en.toml").display().to_string(), &en),
        )
    }

    /// Parses the three files' contents.
    pub fn parse(theme: &str, fr: &str, en: &str) -> Result<Assets, AssetsError> {
        Assets::parse_named(("theme.toml", theme), ("fr.toml", fr), ("en.toml", en))
    }

    fn parse_named(
        theme: (&str, &str),
        fr: (&str, &str),
        en: (&str, &str),
    ) -> Result<Assets, AssetsError> {
        let t: Theme =
            toml::from_str(theme.1).map_err(|e| AssetsError::invalid(theme.0, e.to_string()))?;
        t.check(theme.0)?;
        let mut locales = Vec::new();
        for (file, text) in [fr, en] {
            let s: Strings =
                toml::from_str(text).map_err(|e| AssetsError::invalid(file, e.to_string()))?;
            s.check(file)?;
            locales.push(s);
        }
        let en = locales.pop().expect("two locales");
        let fr = locales.pop().expect("two locales");
        Ok(Assets { theme: t, fr, en })
    }

    /// The words of `locale`.
    pub fn strings(&self, locale: Locale) -> &Strings {
        match locale {
            Locale::Fr => &self.fr,
            Locale::En => &self.en,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_templates_parse_and_pass_their_checks() {
        let a = Assets::builtin();
        assert_eq!(a.fr.greeting, "Bonjour,");
        assert_eq!(a.en.links_heading, "Links:");
        assert!(a.theme.colors.accent.starts_with('#'));
    }

    #[test]
    fn dates_are_written_in_the_locale() {
        let a = Assets::builtin();
        let d = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        assert_eq!(a.fr.format_date(d), "vendredi 27 novembre 2026");
        assert_eq!(a.en.format_date(d), "Friday 27 November 2026");
        let first = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        assert_eq!(a.fr.format_date(first), "dimanche 1er mars 2026");
        assert_eq!(a.en.format_date(first), "Sunday 1 March 2026");
    }

    #[test]
    fn an_unknown_key_is_named_with_its_file() {
        let fr = format!("{FR}\ncolour = \"x\"\n");
        let err = Assets::parse(THEME, &fr, EN).unwrap_err().to_string();
        assert!(err.starts_with("fr.toml:"), "{err}");
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn a_missing_key_is_named_with_its_file() {
        let en = EN.replace("unsubscribe = \"Unsubscribe or manage preferences\"", "");
        let err = Assets::parse(THEME, FR, &en).unwrap_err().to_string();
        assert!(err.starts_with("en.toml:"), "{err}");
        assert!(err.contains("unsubscribe"), "{err}");
    }

    #[test]
    fn a_colour_that_could_break_out_of_a_style_attribute_is_refused() {
        let theme = THEME.replace("accent = \"#c8102e\"", "accent = \"red;background:url(x)\"");
        let err = Assets::parse(&theme, FR, EN).unwrap_err().to_string();
        assert!(err.contains("colors.accent"), "{err}");
    }

    #[test]
    fn a_placeholder_missing_from_a_string_is_refused() {
        let fr = FR.replace("Bonjour {name},", "Bonjour,");
        let err = Assets::parse(THEME, &fr, EN).unwrap_err().to_string();
        assert!(err.contains("greeting_named"), "{err}");
    }

    #[test]
    fn load_reads_a_folder_and_names_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = Assets::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("theme.toml"), "{err}");
        std::fs::write(dir.path().join("theme.toml"), THEME).unwrap();
        std::fs::write(dir.path().join("fr.toml"), FR).unwrap();
        std::fs::write(
            dir.path().join("en.toml"),
            EN.replace("Hello,", "Good morning,"),
        )
        .unwrap();
        let a = Assets::load(dir.path()).unwrap();
        assert_eq!(a.en.greeting, "Good morning,");
    }
}

//! `GET /preferences?token=…`: the subscriber's language and sections in one
//! form; `POST /preferences` saves them. Reached from the unsubscribe page
//! ("rather change the language or the sections?") with the same signed token,
//! so the link in every email leads here too. Saving never changes whether the
//! address receives the newsletter: an unsubscribed reader stays unsubscribed.
//! No section ticked means no preference: every section, in the order.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use super::fields::{Fields, Posted, Queried, TokenField};
use super::subscribe::UnknownSection;
use super::unsubscribe::{resolve, subscriber_locale, token_in};
use super::{page, pages, AppError, AppState, PageLocale, Problem};
use crate::domain::{Locale, Subscriber, SubscriberStatus};

/// The choices posted by the form.
#[derive(Debug, Default, PartialEq)]
struct Choice {
    locale: Option<Locale>,
    categories: Vec<String>,
}

/// Why the posted choices are refused; the page names what is unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ChoiceError {
    #[error("unknown language {0:?}")]
    Language(String),
    #[error(transparent)]
    Section(#[from] UnknownSection),
}

impl Choice {
    /// Reads the form; an unknown language or section is an error that names it.
    fn parse(fields: &Fields, offered: &[String]) -> Result<Choice, ChoiceError> {
        let mut c = Choice::default();
        let mut ticked = Vec::new();
        for (k, v) in fields {
            match k.as_str() {
                "locale" => {
                    c.locale = Some(v.parse().map_err(|_| ChoiceError::Language(v.clone()))?)
                }
                "categories" => ticked.push(v.clone()),
                _ => {}
            }
        }
        c.categories = super::subscribe::offered_sections(&ticked, offered)?;
        Ok(c)
    }
}

fn form(state: &AppState, locale: Locale, sub: &Subscriber, token: &str) -> maud::Markup {
    let w = pages::words(locale);
    let cats = state.cfg.categories();
    let active = sub.status == SubscriberStatus::Active;
    pages::layout(
        locale,
        state.brand(),
        w.prefs_title,
        html! {
            div.box {
                h1 { (w.prefs_title) }
                p.sub { (w.prefs_ask) " " span.who { (pages::masked(sub.email.as_str())) } "." }
                @if !active {
                    p.err { (w.prefs_inactive) }
                }
                form method="post" action="preferences" id="preferences" {
                    input type="hidden" name="token" value=(token);
                    (pages::language_and_sections(w, locale, &cats, &sub.categories))
                    button type="submit" { (w.prefs_button) }
                }
            }
        },
    )
}

/// The subscriber behind the token, or the page saying the link is no good.
async fn subscriber(
    state: &AppState,
    token: Option<String>,
    lang: PageLocale,
) -> Result<Subscriber, AppError> {
    resolve(state, token, lang).await?.ok_or_else(|| {
        AppError::new(StatusCode::NOT_FOUND, lang.0, Problem::BadLink).for_brand(state.brand())
    })
}

pub async fn show(
    State(state): State<AppState>,
    lang: PageLocale,
    Queried(query): Queried<TokenField>,
) -> Result<Response, AppError> {
    let token = token_in(None, query.token);
    let sub = subscriber(&state, token.clone(), lang).await?;
    let locale = subscriber_locale(&state, Some(&sub), lang);
    Ok(page(
        StatusCode::OK,
        form(&state, locale, &sub, token.as_deref().unwrap_or("")),
    ))
}

pub async fn save(
    State(state): State<AppState>,
    lang: PageLocale,
    Posted(fields): Posted<Fields>,
) -> Result<Response, AppError> {
    let token = fields
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.clone());
    let sub = subscriber(&state, token_in(token, None), lang).await?;
    let locale = subscriber_locale(&state, Some(&sub), lang);
    let choice = Choice::parse(&fields, &state.cfg.categories()).map_err(|e| {
        AppError::new(
            StatusCode::BAD_REQUEST,
            locale,
            Problem::Invalid(e.to_string()),
        )
        .for_brand(state.brand())
    })?;
    let new_locale = choice.locale.or(sub.locale);
    let (id, now) = (sub.id, state.now());
    let categories = choice.categories;
    state
        .store(move |s| s.set_preferences(id, new_locale, &categories, now))
        .await?;
    tracing::info!(subscriber = id, "preferences saved");
    let shown = new_locale.unwrap_or(locale);
    let w = pages::words(shown);
    Ok(super::done_page(
        &state,
        shown,
        w.prefs_saved_title,
        w.prefs_saved,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::fields::testing::posted;
    use super::*;

    #[test]
    fn the_form_names_an_unknown_language_or_section_and_keeps_each_section_once() {
        let offered = vec!["Monde".to_string(), "Économie".to_string()];
        let c = Choice::parse(
            &posted(
                "token=t&locale=en&categories=Monde&categories=%C3%89conomie&categories=Monde"
                    .as_bytes(),
            ),
            &offered,
        )
        .unwrap();
        assert_eq!(c.locale, Some(Locale::En));
        assert_eq!(c.categories, ["Monde", "Économie"]);
        let e = Choice::parse(&posted(b"locale=de"), &offered).unwrap_err();
        assert_eq!(e, ChoiceError::Language("de".into()));
        assert!(e.to_string().contains("\"de\""), "{e}");
        let e = Choice::parse(&posted(b"categories=Sport"), &offered).unwrap_err();
        assert_eq!(e, ChoiceError::Section(UnknownSection("Sport".into())));
        assert!(e.to_string().contains("\"Sport\""), "{e}");
        assert_eq!(
            Choice::parse(&posted(b""), &offered).unwrap(),
            Choice::default()
        );
    }
}

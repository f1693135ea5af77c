//! Double opt-in: `GET /subscribe` (an embeddable form), `POST /subscribe`
//! (stores a pending sign-up and mails a signed, expiring link), `GET /confirm`
//! (a page with one button), `POST /confirm` (activates).
//!
//! The answer to a sign-up is the same whether the address is known or not, so
//! the form cannot be used to test who subscribes. Requests are limited per
//! client address (the TCP peer: behind a reverse proxy, every visitor shares
//! the proxy's address, so put the limit there too).
//!
//! An address that unsubscribed and signs up again through this double opt-in
//! is re-activated: confirming from their own mailbox is their explicit choice.
//! (A CSV import or `subscribers add` never re-activates it.)

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Duration;
use maud::html;

use super::fields::{Fields, Posted, Queried, TokenField};
use super::{page, pages, AppError, AppState, ClientAddr, PageLocale, Problem, TokenProblem};
use crate::domain::{EmailError, Locale, SubscriberEmail, SubscriberStatus};
use crate::store::{NewSubscriber, PendingSignup};

/// A section a form ticked that the newsletter does not offer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown section {0:?}")]
pub(super) struct UnknownSection(pub String);

/// The sections a form ticked, each once, in order; one the newsletter does not
/// offer is an error that names it.
pub(super) fn offered_sections(
    chosen: &[String],
    offered: &[String],
) -> Result<Vec<String>, UnknownSection> {
    let mut out: Vec<String> = Vec::new();
    for c in chosen {
        if !offered.contains(c) {
            return Err(UnknownSection(c.clone()));
        }
        if !out.contains(c) {
            out.push(c.clone());
        }
    }
    Ok(out)
}

/// Why a sign-up form is refused; shown above the form, filled again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum SignupError {
    #[error(transparent)]
    Email(#[from] EmailError),
    #[error("the name contains a control character")]
    NameControl,
    #[error("the name is longer than {MAX_NAME} characters")]
    NameTooLong,
    #[error(transparent)]
    Section(#[from] UnknownSection),
}

/// Longest name a sign-up keeps (the form's `maxlength`).
const MAX_NAME: usize = 100;

/// What the visitor typed, kept to fill the form again after an error.
#[derive(Debug, Default, Clone)]
pub struct SignupForm {
    pub email: String,
    pub name: String,
    pub locale: Option<Locale>,
    pub categories: Vec<String>,
    pub timezone: String,
    /// The hidden field was filled: a bot.
    pub honeypot: bool,
}

impl SignupForm {
    fn parse(fields: Fields) -> SignupForm {
        let mut f = SignupForm::default();
        for (k, v) in fields {
            match k.as_str() {
                "email" => f.email = v,
                "name" => f.name = v,
                "locale" => f.locale = v.parse().ok(),
                "categories" => f.categories.push(v),
                "timezone" => f.timezone = v,
                HONEYPOT => f.honeypot |= !v.trim().is_empty(),
                _ => {}
            }
        }
        f
    }

    /// Validates like the CSV import: the address, no control characters, a
    /// known locale and categories; an unknown time zone is ignored (it comes
    /// from the browser, not from the person).
    fn validate(&self, offered: &[String], fallback: Locale) -> Result<NewSubscriber, SignupError> {
        let email = SubscriberEmail::parse(&self.email)?;
        if self.name.chars().any(char::is_control) {
            return Err(SignupError::NameControl);
        }
        let name = self.name.trim();
        if name.chars().count() > MAX_NAME {
            return Err(SignupError::NameTooLong);
        }
        let categories = offered_sections(&self.categories, offered)?;
        Ok(NewSubscriber {
            email,
            name: (!name.is_empty()).then(|| name.to_string()),
            locale: Some(self.locale.unwrap_or(fallback)),
            categories,
            timezone: self.timezone.trim().parse::<chrono_tz::Tz>().ok(),
            status: SubscriberStatus::Pending,
        })
    }
}

/// The form's only script (allowed by its hash in the page's CSP).
pub(super) const TZ_SCRIPT: &str = "try{var t=document.getElementById('tz');if(!t.value){t.value=Intl.DateTimeFormat().resolvedOptions().timeZone||''}}catch(e){}";

/// The name of the hidden field people never fill and form-filling bots do.
const HONEYPOT: &str = "website";

fn form_page(
    state: &AppState,
    locale: Locale,
    f: &SignupForm,
    error: Option<&str>,
) -> maud::Markup {
    let w = pages::words(locale);
    let cats = state.cfg.categories();
    let n = &state.cfg.newsletter;
    // The configured tagline speaks the newsletter's language; other pages use their own words.
    let title = if locale == n.locale && !n.tagline.trim().is_empty() {
        n.tagline.as_str()
    } else {
        w.subscribe_title
    };
    let chosen = f.locale.unwrap_or(locale);
    pages::layout(
        locale,
        state.brand(),
        title,
        html! {
            div.box {
                h1 { (title) }
                p.sub { (w.subscribe_sub) }
                @if let Some(e) = error {
                    p.err role="alert" { (e) }
                }
                form method="post" action="subscribe" id="signup" {
                    label for="email" { (w.email) }
                    input #email type="email" name="email" required autocomplete="email"
                        inputmode="email" placeholder=(w.email_placeholder) value=(f.email);
                    label for="name" { (w.name) " " small { "(" (w.name_hint) ")" } }
                    input #name type="text" name="name" maxlength="100" autocomplete="given-name" value=(f.name);
                    (pages::language_and_sections(w, chosen, &cats, &f.categories))
                    input type="hidden" name="timezone" id="tz" value=(f.timezone);
                    // People never see or fill this; form-filling bots do.
                    div style="position:absolute;left:-10000px;width:1px;height:1px;overflow:hidden" aria-hidden="true" {
                        label for="website" { "Website" }
                        input #website type="text" name=(HONEYPOT) tabindex="-1" autocomplete="off" value="";
                    }
                    button type="submit" { (w.subscribe_button) }
                    p.fine { (w.privacy) }
                }
            }
            // The reader's own time zone, so that the issue arrives at their morning.
            script { (maud::PreEscaped(TZ_SCRIPT)) }
        },
    )
}

pub async fn form(State(state): State<AppState>, lang: PageLocale) -> Response {
    embeddable(page(
        StatusCode::OK,
        form_page(&state, lang.0, &SignupForm::default(), None),
    ))
}

/// The sign-up form and what its button leads to may be shown in another
/// site's frame (the newsroom embeds it); every other page may not.
fn embeddable(mut res: Response) -> Response {
    res.extensions_mut().insert(super::Embeddable);
    res
}

/// How long a sign-up waits for its confirmation before it is deleted.
pub const SIGNUP_RETENTION_DAYS: i64 = 7;

/// What a sign-up request leads to; the visitor sees the same page for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A confirmation mail goes out.
    Mail,
    /// The address is already active, or got a confirmation within the cooldown.
    Quiet,
}

pub async fn submit(
    State(state): State<AppState>,
    lang: PageLocale,
    client: ClientAddr,
    Posted(fields): Posted<Fields>,
) -> Result<Response, AppError> {
    let f = SignupForm::parse(fields);
    let locale = f.locale.unwrap_or(lang.0);
    let w = pages::words(locale);
    if let Some(ip) = client.0 {
        if !state.limiter.check(ip, state.now()) {
            return Err(
                AppError::new(StatusCode::TOO_MANY_REQUESTS, locale, Problem::TooMany)
                    .for_brand(state.brand()),
            );
        }
    }
    if f.honeypot {
        // Dropped without a word: the bot sees what a person would.
        tracing::info!("sign-up dropped: the hidden field was filled");
        return Ok(embeddable(super::done_page(
            &state,
            locale,
            w.check_inbox_title,
            w.check_inbox,
        )));
    }
    let new = match f.validate(&state.cfg.categories(), locale) {
        // The newsletter's own zone is the default: stored as "no zone of their own".
        Ok(mut n) => {
            if n.timezone == Some(state.cfg.newsletter.timezone.0) {
                n.timezone = None;
            }
            n
        }
        Err(e) => {
            return Ok(embeddable(page(
                StatusCode::BAD_REQUEST,
                form_page(&state, locale, &f, Some(&e.to_string())),
            )))
        }
    };
    let now = state.now();
    let email = new.email.clone();
    let signup = PendingSignup {
        subscriber: new,
        requested_at: now,
    };
    let cooldown = Duration::hours(state.cfg.server.confirm_cooldown_hours as i64);
    let outcome = state
        .store(move |s| {
            s.purge_signups(now - Duration::days(SIGNUP_RETENTION_DAYS))?;
            let e = &signup.subscriber.email;
            if s.subscriber_by_email(e)?
                .is_some_and(|x| x.status == SubscriberStatus::Active)
            {
                return Ok(Outcome::Quiet);
            }
            s.put_signup(&signup)?;
            Ok(if s.claim_confirmation_mail(e, now, cooldown)? {
                Outcome::Mail
            } else {
                Outcome::Quiet
            })
        })
        .await?;
    let done = || {
        embeddable(super::done_page(
            &state,
            locale,
            w.check_inbox_title,
            w.check_inbox,
        ))
    };
    if outcome == Outcome::Quiet {
        // Already subscribed, or mailed recently: no mail, and the same page, so
        // that the form neither mails a stranger repeatedly nor tells who subscribes.
        return Ok(done());
    }

    let hours = state.cfg.server.confirm_ttl_hours.max(1);
    let token = super::confirm_token(&state, &email, now + Duration::hours(hours as i64))?;
    let url = {
        let mut u = url::Url::parse(&format!("{}/confirm", state.base_url()))
            .map_err(|e| AppError::internal(anyhow::anyhow!("base_url: {e}")))?;
        u.query_pairs_mut()
            .append_pair("token", &token)
            .append_pair("lang", locale.code());
        u.to_string()
    };
    let subject = w.confirm_mail_subject.replace("{name}", state.brand());
    let text = w
        .confirm_mail_body
        .replace("{name}", state.brand())
        .replace("{url}", &url)
        .replace("{hours}", &hours.to_string());
    state
        .mailer
        .send(&email, &subject, &text)
        .await
        .map_err(|e| {
            AppError::internal(e.context("cannot send the confirmation email"))
                .in_locale(locale)
                .for_brand(state.brand())
        })?;
    state.metrics.signup();
    Ok(done())
}

fn token_error(state: &AppState, locale: Locale, p: TokenProblem) -> AppError {
    let problem = match p {
        TokenProblem::Invalid => Problem::BadLink,
        TokenProblem::Expired => Problem::ExpiredLink,
    };
    AppError::new(StatusCode::BAD_REQUEST, locale, problem).for_brand(state.brand())
}

pub async fn show_confirm(
    State(state): State<AppState>,
    lang: PageLocale,
    Queried(query): Queried<TokenField>,
) -> Result<Response, AppError> {
    let token = query.token.unwrap_or_default();
    let email = super::verify_confirm_token(&state, &token, state.now())
        .map_err(|p| token_error(&state, lang.0, p))?;
    let w = pages::words(lang.0);
    Ok(page(
        StatusCode::OK,
        pages::one_button(
            lang.0,
            state.brand(),
            &pages::OneButton {
                title: w.confirm_title,
                ask: w.confirm_ask,
                who: &pages::masked(email.as_str()),
                action: "confirm",
                token: &token,
                button: w.confirm_button,
                aside: None,
            },
        ),
    ))
}

pub async fn confirm(
    State(state): State<AppState>,
    lang: PageLocale,
    Queried(query): Queried<TokenField>,
    Posted(form): Posted<TokenField>,
) -> Result<Response, AppError> {
    let token = form.token.or(query.token).unwrap_or_default();
    let now = state.now();
    let email = super::verify_confirm_token(&state, &token, now)
        .map_err(|p| token_error(&state, lang.0, p))?;
    let e = email.clone();
    let (signup, existing) = state
        .store(move |s| Ok((s.take_signup(&e)?, s.subscriber_by_email(&e)?)))
        .await?;
    let locale = match (&signup, &existing) {
        (Some(p), _) => p.subscriber.locale.unwrap_or(lang.0),
        (None, Some(s)) => s.locale.unwrap_or(lang.0),
        (None, None) => lang.0,
    };
    match signup {
        Some(p) => {
            let mut new = p.subscriber;
            new.status = SubscriberStatus::Active;
            let e = email.clone();
            state
                .store(move |s| {
                    // Their own confirmed sign-up lifts any suppression (unsubscribed,
                    // removed, forgotten): it is their choice to come back.
                    s.lift_suppression(&e)?;
                    s.upsert_subscriber(&new)?;
                    // The store keeps an unsubscribed address unsubscribed on upsert;
                    // a confirmed double opt-in is the person's own choice to come back.
                    if let Some(sub) = s.subscriber_by_email(&e)? {
                        if sub.status != SubscriberStatus::Active {
                            s.set_status(
                                sub.id,
                                SubscriberStatus::Active,
                                "confirmed sign-up",
                                now,
                            )?;
                        }
                    }
                    Ok(())
                })
                .await?;
            state.metrics.confirmation();
            tracing::info!("sign-up confirmed");
        }
        // A second click on the button: already done.
        None if existing
            .as_ref()
            .is_some_and(|s| s.status == SubscriberStatus::Active) => {}
        None => return Err(token_error(&state, locale, TokenProblem::Expired)),
    }
    let w = pages::words(locale);
    Ok(super::done_page(
        &state,
        locale,
        w.confirmed_title,
        w.confirmed,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::fields::testing::posted;
    use super::*;

    fn offered() -> Vec<String> {
        vec!["Monde".into(), "Économie".into()]
    }

    #[test]
    fn a_valid_form_becomes_a_pending_subscriber() {
        let f = SignupForm::parse(posted(
            "email=Jean%40Example.COM&name=+Jean+&locale=en&categories=Monde&categories=%C3%89conomie&categories=Monde&timezone=America%2FNew_York".as_bytes(),
        ));
        let n = f.validate(&offered(), Locale::Fr).unwrap();
        assert_eq!(n.email.as_str(), "Jean@example.com");
        assert_eq!(n.name.as_deref(), Some("Jean"));
        assert_eq!(n.locale, Some(Locale::En));
        assert_eq!(
            n.categories,
            vec!["Monde".to_string(), "Économie".to_string()]
        );
        assert_eq!(n.timezone, Some(chrono_tz::America::New_York));
        assert_eq!(n.status, SubscriberStatus::Pending);
    }

    #[test]
    fn a_header_injection_in_the_address_or_name_is_refused() {
        let f = SignupForm::parse(posted(b"email=a%40b.com%0D%0ABcc%3A+x%40y.com"));
        assert_eq!(
            f.validate(&offered(), Locale::Fr).unwrap_err(),
            SignupError::Email(EmailError::ControlCharacter)
        );
        let f = SignupForm::parse(posted(b"email=a%40b.com&name=x%0Ay"));
        assert_eq!(
            f.validate(&offered(), Locale::Fr).unwrap_err(),
            SignupError::NameControl
        );
    }

    #[test]
    fn a_name_over_100_characters_is_refused_once_trimmed() {
        let form = |name: String| SignupForm {
            email: "a@b.com".into(),
            name,
            ..SignupForm::default()
        };
        let long = form("é".repeat(101));
        let e = long.validate(&offered(), Locale::Fr).unwrap_err();
        assert_eq!(e, SignupError::NameTooLong);
        assert_eq!(e.to_string(), "the name is longer than 100 characters");
        let padded = form(format!("  {}  ", "é".repeat(100)));
        assert!(padded.validate(&offered(), Locale::Fr).is_ok());
    }

    #[test]
    fn an_unknown_category_is_refused_and_a_bad_zone_ignored() {
        let f = SignupForm::parse(posted(b"email=a%40b.com&categories=Crypto"));
        let e = f.validate(&offered(), Locale::Fr).unwrap_err();
        assert_eq!(e, SignupError::Section(UnknownSection("Crypto".into())));
        assert!(e.to_string().contains("Crypto"));
        let f = SignupForm::parse(posted(b"email=a%40b.com&timezone=Mars%2FOlympus"));
        assert_eq!(f.validate(&offered(), Locale::Fr).unwrap().timezone, None);
    }
}

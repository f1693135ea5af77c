//! The service's few pages (maud): one sober, mobile-friendly layout and the
//! words of each locale. No page ever shows an address in full or a token
//! outside the form that needs it.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::domain::Locale;

/// The words of the service's pages.
pub struct Words {
    pub unsub_title: &'static str,
    pub unsub_ask: &'static str,
    pub unsub_button: &'static str,
    pub unsub_done_title: &'static str,
    pub unsub_done: &'static str,
    pub prefs_offer: &'static str,
    pub prefs_link: &'static str,
    pub prefs_title: &'static str,
    pub prefs_ask: &'static str,
    pub prefs_button: &'static str,
    pub prefs_saved_title: &'static str,
    pub prefs_saved: &'static str,
    pub prefs_inactive: &'static str,
    pub subscribe_title: &'static str,
    pub subscribe_sub: &'static str,
    pub email_placeholder: &'static str,
    pub email: &'static str,
    pub name: &'static str,
    pub name_hint: &'static str,
    pub language: &'static str,
    pub categories: &'static str,
    pub subscribe_button: &'static str,
    pub privacy: &'static str,
    pub check_inbox_title: &'static str,
    pub check_inbox: &'static str,
    pub confirm_title: &'static str,
    pub confirm_ask: &'static str,
    pub confirm_button: &'static str,
    pub confirmed_title: &'static str,
    pub confirmed: &'static str,
    pub bad_link_title: &'static str,
    pub bad_link: &'static str,
    pub expired_link: &'static str,
    pub invalid_title: &'static str,
    pub not_found_title: &'static str,
    pub not_found: &'static str,
    pub too_many_title: &'static str,
    pub too_many: &'static str,
    pub unavailable_title: &'static str,
    pub unavailable: &'static str,
    pub archive_title: &'static str,
    pub archive_empty: &'static str,
    pub archive_feed: &'static str,
    pub stories: &'static str,
    pub confirm_mail_subject: &'static str,
    pub confirm_mail_body: &'static str,
}

pub const FR: Words = Words {
    unsub_title: "Se désinscrire",
    unsub_ask: "Vous ne recevrez plus la newsletter à l’adresse",
    unsub_button: "Confirmer la désinscription",
    unsub_done_title: "Vous êtes désinscrit",
    unsub_done: "C’est fait : vous ne recevrez plus cette newsletter. Vous pouvez vous réinscrire à tout moment.",
    prefs_offer: "Plutôt changer de langue ou de rubriques ?",
    prefs_link: "Gérer mes préférences",
    prefs_title: "Vos préférences",
    prefs_ask: "La langue et les rubriques de la newsletter envoyée à",
    prefs_button: "Enregistrer",
    prefs_saved_title: "Préférences enregistrées",
    prefs_saved: "C’est noté : le prochain numéro en tiendra compte.",
    prefs_inactive: "Cette adresse ne reçoit pas la newsletter en ce moment ; vos choix serviront si vous vous réinscrivez.",
    subscribe_title: "La newsletter qui vous briefe en 5 min",
    email_placeholder: "prenom.nom@exemple.fr",
    subscribe_sub: "Chaque jour, recevez l’essentiel de l’information pour ne rien rater de l’actualité",
    email: "Adresse e-mail",
    name: "Prénom",
    name_hint: "facultatif",
    language: "Langue",
    categories: "Rubriques préférées",
    subscribe_button: "Je m’inscris",
    privacy: "Un e-mail de confirmation vous sera envoyé. Un lien de désinscription figure dans chaque envoi.",
    check_inbox_title: "Vérifiez votre boîte de réception",
    check_inbox: "Si cette adresse peut recevoir la newsletter, un e-mail de confirmation vient d’y être envoyé. Cliquez sur le lien qu’il contient pour confirmer votre inscription.",
    confirm_title: "Confirmer l’inscription",
    confirm_ask: "Un dernier clic pour recevoir la newsletter à l’adresse",
    confirm_button: "Confirmer mon inscription",
    confirmed_title: "Inscription confirmée",
    confirmed: "Merci\u{a0}! Vous recevrez la prochaine édition.",
    bad_link_title: "Lien invalide",
    bad_link: "Ce lien n’est pas valide. Utilisez le lien exact reçu par e-mail.",
    expired_link: "Ce lien n’est plus valide. Inscrivez-vous à nouveau pour recevoir un nouveau lien.",
    invalid_title: "Vérifiez le formulaire",
    not_found_title: "Page introuvable",
    not_found: "Cette page n’existe pas.",
    too_many_title: "Trop de demandes",
    too_many: "Trop de demandes depuis votre connexion. Réessayez dans une minute.",
    unavailable_title: "Service indisponible",
    unavailable: "Un problème est survenu de notre côté. Réessayez plus tard.",
    archive_title: "Les éditions précédentes",
    archive_empty: "Aucune édition pour l’instant.",
    archive_feed: "Flux Atom",
    stories: "articles",
    confirm_mail_subject: "Confirmez votre inscription à {name}",
    confirm_mail_body: "Bonjour,\n\nPour recevoir {name}, confirmez votre inscription en ouvrant ce lien :\n\n{url}\n\nCe lien est valable {hours} heures. Si vous n’êtes pas à l’origine de cette demande, ignorez ce message : vous ne recevrez rien.\n",
};

pub const EN: Words = Words {
    unsub_title: "Unsubscribe",
    unsub_ask: "You will no longer receive the newsletter at",
    unsub_button: "Confirm unsubscribe",
    unsub_done_title: "You are unsubscribed",
    unsub_done: "Done: you will not receive this newsletter any more. You can sign up again at any time.",
    prefs_offer: "Rather change the language or the sections?",
    prefs_link: "Manage my preferences",
    prefs_title: "Your preferences",
    prefs_ask: "The language and sections of the newsletter sent to",
    prefs_button: "Save",
    prefs_saved_title: "Preferences saved",
    prefs_saved: "Noted: the next issue will follow them.",
    prefs_inactive: "This address does not receive the newsletter at the moment; your choices will apply if you sign up again.",
    subscribe_title: "The newsletter that briefs you in 5 minutes",
    email_placeholder: "first.last@example.com",
    subscribe_sub: "Every day, get the essential news so you miss nothing",
    email: "Email address",
    name: "First name",
    name_hint: "optional",
    language: "Language",
    categories: "Favourite sections",
    subscribe_button: "Sign me up",
    privacy: "We will send you a confirmation email. Every issue has an unsubscribe link.",
    check_inbox_title: "Check your inbox",
    check_inbox: "If this address can receive the newsletter, a confirmation email is on its way. Click the link inside to confirm.",
    confirm_title: "Confirm your subscription",
    confirm_ask: "One last click to receive the newsletter at",
    confirm_button: "Confirm my subscription",
    confirmed_title: "Subscription confirmed",
    confirmed: "Thank you! You will receive the next issue.",
    bad_link_title: "Invalid link",
    bad_link: "This link is not valid. Use the exact link from the email.",
    expired_link: "This link is no longer valid. Sign up again to get a new one.",
    invalid_title: "Please check the form",
    not_found_title: "Page not found",
    not_found: "This page does not exist.",
    too_many_title: "Too many requests",
    too_many: "Too many requests from your connection. Try again in a minute.",
    unavailable_title: "Service unavailable",
    unavailable: "Something went wrong on our side. Please try again later.",
    archive_title: "Past issues",
    archive_empty: "No issue yet.",
    archive_feed: "Atom feed",
    stories: "stories",
    confirm_mail_subject: "Confirm your subscription to {name}",
    confirm_mail_body: "Hello,\n\nTo receive {name}, confirm your subscription by opening this link:\n\n{url}\n\nThe link is valid for {hours} hours. If you did not ask for this, ignore this message: you will receive nothing.\n",
};

pub fn words(locale: Locale) -> &'static Words {
    match locale {
        Locale::Fr => &FR,
        Locale::En => &EN,
    }
}

const CSS: &str = r#"
:root{--ink:#111;--muted:#5b5b5b;--line:#ddd;--accent:#c8102e;--bg:#fff;--paper:#f6f5f1}
@media (prefers-color-scheme:dark){:root{--ink:#eee;--muted:#aaa;--line:#333;--bg:#121212;--paper:#1c1c1c;--accent:#ff5a6e}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--ink);font:17px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
main{max-width:560px;margin:0 auto;padding:24px 18px 48px}
.brand{font:700 14px/1 Georgia,"Times New Roman",serif;letter-spacing:.08em;text-transform:uppercase;color:var(--accent);border-bottom:3px solid var(--ink);padding-bottom:10px;margin-bottom:22px}
h1{font:700 28px/1.2 Georgia,"Times New Roman",serif;margin:0 0 10px}
p{margin:0 0 16px}
.sub{color:var(--muted);margin-bottom:22px}
.box{background:var(--paper);border-top:4px solid var(--accent);padding:22px 20px}
label{display:block;font-weight:600;font-size:15px;margin:14px 0 6px}
label small{font-weight:400;color:var(--muted)}
input[type=email],input[type=text],select{width:100%;font:inherit;padding:11px 12px;border:1px solid #999;border-radius:3px;background:var(--bg);color:var(--ink)}
fieldset{border:0;padding:0;margin:14px 0 0}
legend{font-weight:600;font-size:15px;margin-bottom:6px;padding:0}
.cats{display:flex;flex-wrap:wrap;gap:8px}
.cats label{display:inline-flex;align-items:center;gap:6px;margin:0;font-weight:400;border:1px solid var(--line);border-radius:999px;padding:6px 12px;background:var(--bg);cursor:pointer}
button{display:block;width:100%;margin-top:20px;font:700 17px/1 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;padding:15px 18px;border:0;border-radius:3px;background:var(--accent);color:#fff;cursor:pointer}
button:focus-visible,input:focus-visible,select:focus-visible{outline:3px solid #1a73e8;outline-offset:2px}
.fine{font-size:13px;color:var(--muted);margin:14px 0 0}
.err{border-left:4px solid var(--accent);padding:8px 12px;background:var(--paper);margin-bottom:16px}
.who{font-weight:700;word-break:break-all}
ul.issues{list-style:none;padding:0;margin:0}
ul.issues li{border-bottom:1px solid var(--line);padding:12px 0}
ul.issues a{color:var(--ink);text-decoration:none;font:700 18px/1.3 Georgia,"Times New Roman",serif}
ul.issues a:hover{text-decoration:underline}
ul.issues .d{display:block;color:var(--muted);font-size:14px}
a{color:var(--accent)}
"#;

/// The page frame: `lang`, viewport, the newsletter's name as a masthead.
pub fn layout(locale: Locale, brand: &str, title: &str, body: Markup) -> Markup {
    layout_with_feed(locale, brand, title, None, body)
}

/// [`layout`], announcing an Atom feed (relative `href`) to browsers and feed readers.
pub fn layout_with_feed(
    locale: Locale,
    brand: &str,
    title: &str,
    feed: Option<&str>,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(locale.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                meta name="color-scheme" content="light dark";
                title { (title) " · " (brand) }
                @if let Some(href) = feed {
                    link rel="alternate" type="application/atom+xml" title=(brand) href=(href);
                }
                style { (PreEscaped(CSS)) }
            }
            body {
                main {
                    div.brand { (brand) }
                    (body)
                }
            }
        }
    }
}

/// A page with a title and one paragraph (results and errors).
pub fn message(locale: Locale, brand: &str, title: &str, text: &str) -> Markup {
    layout(
        locale,
        brand,
        title,
        html! {
            h1 { (title) }
            p { (text) }
        },
    )
}

/// `a…@example.com`: enough for people to recognise their address, not enough to harvest it.
pub fn masked(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}…@{domain}")
        }
        None => "…".into(),
    }
}

/// A page whose only action is one POST button carrying a token.
pub struct OneButton<'a> {
    pub title: &'a str,
    pub ask: &'a str,
    /// The masked address the action is about.
    pub who: &'a str,
    /// Relative form action (`unsubscribe`, `confirm`).
    pub action: &'a str,
    pub token: &'a str,
    pub button: &'a str,
    /// A line under the form: text, then a link (text, relative href).
    pub aside: Option<(&'a str, &'a str, String)>,
}

pub fn one_button(locale: Locale, brand: &str, p: &OneButton<'_>) -> Markup {
    layout(
        locale,
        brand,
        p.title,
        html! {
            h1 { (p.title) }
            p { (p.ask) " " span.who { (p.who) } "." }
            form method="post" action=(p.action) {
                input type="hidden" name="token" value=(p.token);
                button type="submit" { (p.button) }
            }
            @if let Some((text, link, href)) = &p.aside {
                p.fine { (text) " " a href=(href) { (link) } }
            }
        },
    )
}

/// The language select and the sections' checkboxes of the sign-up and
/// preferences forms.
pub fn language_and_sections(
    w: &Words,
    chosen: Locale,
    offered: &[String],
    followed: &[String],
) -> Markup {
    html! {
        label for="locale" { (w.language) }
        select #locale name="locale" {
            option value="fr" selected[chosen == Locale::Fr] { "Français" }
            option value="en" selected[chosen == Locale::En] { "English" }
        }
        @if !offered.is_empty() {
            fieldset {
                legend { (w.categories) }
                div.cats {
                    @for c in offered {
                        label {
                            input type="checkbox" name="categories" value=(c)
                                checked[followed.contains(c)];
                            (c)
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_address_keeps_first_letter_and_domain() {
        assert_eq!(masked("jean.dupont@example.com"), "j…@example.com");
    }

    #[test]
    fn layout_declares_language_and_escapes_text() {
        let page = message(Locale::En, "L'Essentiel", "<b>x</b>", "a & b").into_string();
        assert!(page.contains("<html lang=\"en\">"));
        assert!(page.contains("&lt;b&gt;x&lt;/b&gt;"));
        assert!(page.contains("a &amp; b"));
        assert!(page.contains("width=device-width"));
    }
}

//! Turns a subscriber into a message: each variant of the issue (language,
//! followed sections) rendered once, then personalised per subscriber.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::bounces::ReturnPath;
use crate::config::{Config, Secret};
use crate::domain::{Digest, Locale, Subscriber};
use crate::render::{self, Assets, EmailTemplate, Personal, RenderedEmail};

use super::message::{MessageFactory, Outgoing, PreEncoded};
use super::token;

/// Turns a subscriber into a message. The digest composer renders each variant
/// once and personalises per subscriber; tests can hand in anything.
pub trait Compose: Send + Sync {
    fn compose(&self, subscriber: &Subscriber) -> Result<Outgoing>;
}

type VariantKey = (Locale, Vec<String>);

/// A rendered variant and, when messages are not signed, its encoded parts.
struct Variant {
    template: EmailTemplate,
    encoded: Option<PreEncoded>,
}

/// Composes the messages of one issue: variants memoised by (locale, followed categories).
pub struct DigestComposer {
    digest: Digest,
    assets: Assets,
    subject_template: String,
    factory: MessageFactory,
    secret: Secret,
    list_id: String,
    now: DateTime<Utc>,
    variants: Mutex<HashMap<VariantKey, Arc<Variant>>>,
    return_path: Option<ReturnPath>,
}

impl DigestComposer {
    pub fn new(
        cfg: &Config,
        digest: &Digest,
        assets: &Assets,
        secret: Secret,
        now: DateTime<Utc>,
    ) -> Result<DigestComposer> {
        Ok(DigestComposer {
            digest: digest.clone(),
            assets: assets.clone(),
            subject_template: cfg.sender.subject.clone(),
            factory: MessageFactory::from_config(cfg)?,
            secret,
            list_id: cfg.list_id(),
            now,
            variants: Mutex::new(HashMap::new()),
            return_path: cfg.bounces.return_path.clone(),
        })
    }

    fn variant(&self, locale: Locale, follow: &[String]) -> Arc<Variant> {
        let key = (locale, follow.to_vec());
        if let Some(t) = self.variants.lock().expect("variants lock").get(&key) {
            return t.clone();
        }
        let template = render::render_variant(
            &self.digest,
            &self.assets,
            locale,
            follow,
            &self.subject_template,
        );
        let encoded = (!self.factory.signs()).then(|| PreEncoded::new(&template));
        let t = Arc::new(Variant { template, encoded });
        self.variants
            .lock()
            .expect("variants lock")
            .entry(key)
            .or_insert(t)
            .clone()
    }

    /// The personalised bodies of `subscriber`, and their unsubscribe token.
    pub fn render_for(&self, subscriber: &Subscriber) -> (RenderedEmail, String) {
        let locale = subscriber.locale.unwrap_or(self.digest.locale);
        let variant = self.variant(locale, &subscriber.categories);
        let token = token::unsubscribe_token(&self.secret, &self.list_id, &subscriber.link_key);
        let email = variant.template.personalise(&Personal {
            name: subscriber.name.clone(),
            unsubscribe_url: self.factory.unsubscribe_url(&token),
        });
        (email, token)
    }
}

impl DigestComposer {
    /// Builds `subscriber`'s message and checks it against the sending rules.
    pub fn lint_for(&self, subscriber: &Subscriber) -> Result<Vec<super::lint::LintIssue>> {
        let (email, _) = self.render_for(subscriber);
        let msg = self.compose(subscriber)?;
        Ok(super::lint::lint_message(
            &email.html,
            &email.text,
            &header_fields(&msg.bytes),
            msg.bytes.len(),
        ))
    }
}

/// The header fields of a raw message, unfolded: (name, value).
pub fn header_fields(raw: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            out.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

impl DigestComposer {
    /// `subscriber`'s message through lettre's builder (the one that signs), whatever
    /// the configuration: what the pre-encoded path is checked against.
    pub fn compose_with_lettre(&self, subscriber: &Subscriber) -> Result<Outgoing> {
        let (email, token) = self.render_for(subscriber);
        self.factory
            .build(
                subscriber.email.as_str(),
                subscriber.name.as_deref(),
                &email,
                &token,
                self.now,
            )
            .map(|out| self.with_return_path(out, subscriber.id))
    }

    /// With `[bounces] return_path`, the envelope sender is the signed VERP address
    /// of this subscriber's copy of the issue, so that its bounces find them.
    fn with_return_path(&self, mut out: Outgoing, subscriber_id: i64) -> Outgoing {
        if let Some(rp) = &self.return_path {
            out.from = rp.address_for(&self.secret, subscriber_id, self.digest.date);
        }
        out
    }
}

impl Compose for DigestComposer {
    /// Without DKIM, from the variant's pre-encoded parts (a few µs); with DKIM,
    /// built and signed by lettre. Non-ASCII addresses always go through lettre.
    fn compose(&self, subscriber: &Subscriber) -> Result<Outgoing> {
        let locale = subscriber.locale.unwrap_or(self.digest.locale);
        let variant = self.variant(locale, &subscriber.categories);
        let address = subscriber.email.as_str();
        match &variant.encoded {
            Some(encoded) if address.is_ascii() => {
                let token =
                    token::unsubscribe_token(&self.secret, &self.list_id, &subscriber.link_key);
                let values = variant.template.slot_values(&Personal {
                    name: subscriber.name.clone(),
                    unsubscribe_url: self.factory.unsubscribe_url(&token),
                });
                self.factory
                    .build_pre_encoded(
                        address,
                        subscriber.name.as_deref(),
                        encoded,
                        &values,
                        &token,
                        self.now,
                    )
                    .map(|out| self.with_return_path(out, subscriber.id))
            }
            _ => self.compose_with_lettre(subscriber),
        }
    }
}

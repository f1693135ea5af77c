//! Turns a subscriber into a message: each variant of the issue (language,
//! followed sections) rendered once, then personalised per subscriber.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use crate::bounces::ReturnPath;
use crate::config::{Config, Secret};
use crate::domain::{Digest, Locale, Subscriber};
use crate::render::{self, Assets, EmailTemplate, Personal, RenderedEmail};
use crate::store::issues::variant_key;
use crate::store::Store;

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
    /// Where the issue is frozen: each variant is the one kept there.
    frozen: Option<Arc<dyn Store>>,
    /// A variant not kept yet is rendered here and not kept (a preview).
    read_only: bool,
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
            frozen: None,
            read_only: false,
        })
    }

    /// Every variant as kept in the issue frozen in `store` (the issue must be
    /// frozen there): the one a sender kept first, on whatever machine, so that
    /// every subscriber of a variant gets the same bytes. Each is read (or
    /// rendered and kept) the first time it is needed.
    pub fn frozen_in(mut self, store: Arc<dyn Store>) -> DigestComposer {
        self.frozen = Some(store);
        self
    }

    /// Like [`DigestComposer::frozen_in`], writing nothing: a variant kept
    /// there is the one used, one not kept yet is rendered here (a preview).
    pub fn as_kept_in(self, store: Arc<dyn Store>) -> DigestComposer {
        DigestComposer {
            read_only: true,
            ..self.frozen_in(store)
        }
    }

    /// Reads (or renders and keeps) now the variants of every active
    /// subscriber, so that the send loop does not wait on the database for them.
    pub fn with_variants_in_use(self) -> Result<DigestComposer> {
        let Some(issues) = self.frozen.as_ref().map(|s| s.issues()) else {
            return Ok(self);
        };
        let in_use = issues
            .variants_in_use()
            .context("cannot read which variants the subscribers read")?;
        for (locale, follow) in in_use {
            self.variant(locale.unwrap_or(self.digest.locale), &follow)?;
        }
        Ok(self)
    }

    fn variant(&self, locale: Locale, follow: &[String]) -> Result<Arc<Variant>> {
        let key = (locale, follow.to_vec());
        if let Some(t) = self.variants.lock().expect("variants lock").get(&key) {
            return Ok(t.clone());
        }
        let mut template = render::render_variant(
            &self.digest,
            &self.assets,
            locale,
            follow,
            &self.subject_template,
        );
        if let Some(issues) = self.frozen.as_ref().map(|s| s.issues()) {
            let date = self.digest.date;
            let name = variant_key(locale, follow);
            let kept = if self.read_only {
                issues.frozen_variant(date, &name).with_context(|| {
                    format!("cannot read the variant {name:?} of the issue of {date}")
                })?
            } else {
                Some(
                    issues
                        .freeze_variant(date, &name, &template.to_json())
                        .with_context(|| {
                            format!("cannot keep the variant {name:?} of the issue of {date}")
                        })?,
                )
            };
            if let Some(kept) = kept {
                template = EmailTemplate::from_json(&kept).map_err(|e| {
                    anyhow::anyhow!("the kept variant {name:?} of the issue of {date}: {e}")
                })?;
            }
        }
        let encoded = (!self.factory.signs()).then(|| PreEncoded::new(&template));
        let t = Arc::new(Variant { template, encoded });
        Ok(self
            .variants
            .lock()
            .expect("variants lock")
            .entry(key)
            .or_insert(t)
            .clone())
    }

    /// The personalised bodies of `subscriber`, and their unsubscribe token.
    pub fn render_for(&self, subscriber: &Subscriber) -> Result<(RenderedEmail, String)> {
        let locale = subscriber.locale.unwrap_or(self.digest.locale);
        let variant = self.variant(locale, &subscriber.categories)?;
        let token = token::unsubscribe_token(&self.secret, &self.list_id, &subscriber.link_key);
        let email = variant.template.personalise(&Personal {
            name: subscriber.name.clone(),
            unsubscribe_url: self.factory.unsubscribe_url(&token),
        });
        Ok((email, token))
    }
}

impl DigestComposer {
    /// Builds `subscriber`'s message and checks it against the sending rules.
    pub fn lint_for(&self, subscriber: &Subscriber) -> Result<Vec<super::lint::LintIssue>> {
        let (email, _) = self.render_for(subscriber)?;
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
        let (email, token) = self.render_for(subscriber)?;
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
        let variant = self.variant(locale, &subscriber.categories)?;
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

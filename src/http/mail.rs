//! The service's own emails (the sign-up confirmation), sent through the same
//! [`Transport`] as the digest: SMTP, or `.eml` files with the file transport.

use std::sync::Arc;

use anyhow::Context;
use futures::future::BoxFuture;
use lettre::message::{header::ContentType, Mailbox};

use super::Mailer;
use crate::config::Config;
use crate::deliver::message::Outgoing;
use crate::deliver::transport::Transport;
use crate::domain::SubscriberEmail;

/// Plain-text mails through a delivery transport, one connection per mail
/// (confirmations are rare; a pooled session would sit idle).
pub struct TransportMailer {
    transport: Arc<dyn Transport>,
    from: Mailbox,
    domain: String,
}

impl TransportMailer {
    pub fn new(cfg: &Config, transport: Arc<dyn Transport>) -> anyhow::Result<TransportMailer> {
        let from: Mailbox = cfg
            .sender
            .from
            .parse()
            .with_context(|| format!("sender.from {:?} is not a mailbox", cfg.sender.from))?;
        let domain = from.email.domain().to_string();
        Ok(TransportMailer {
            transport,
            from,
            domain,
        })
    }

    /// The transport `[smtp]` asks for.
    pub fn from_config(cfg: &Config) -> anyhow::Result<TransportMailer> {
        TransportMailer::new(cfg, crate::deliver::transport::from_config(cfg)?)
    }

    fn build(&self, to: &SubscriberEmail, subject: &str, text: &str) -> anyhow::Result<Outgoing> {
        let id = format!("{:032x}@{}", rand::random::<u128>(), self.domain);
        let msg = lettre::Message::builder()
            .from(self.from.clone())
            .to(to.as_str().parse().context("recipient address")?)
            .subject(subject)
            .message_id(Some(format!("<{id}>")))
            .date(crate::clock::now().into())
            .header(ContentType::TEXT_PLAIN)
            .body(text.to_string())
            .context("cannot build the confirmation email")?;
        Ok(Outgoing {
            message_id: id,
            from: self.from.email.to_string(),
            to: to.as_str().to_string(),
            bytes: msg.formatted(),
        })
    }
}

impl Mailer for TransportMailer {
    fn send<'a>(
        &'a self,
        to: &'a SubscriberEmail,
        subject: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let out = self.build(to, subject, text)?;
            let mut conn = self
                .transport
                .connect()
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", self.transport.describe()))?;
            let r = conn.send(&out).await;
            conn.close().await;
            r.map_err(|e| anyhow::anyhow!("{}: {e}", self.transport.describe()))
        })
    }
}

//! The service's own emails (the sign-up confirmation), sent through the same
//! [`Transport`] as the digest: SMTP, or `.eml` files with the file transport.

use std::sync::Arc;

use anyhow::Context;
use futures::future::BoxFuture;

use super::Mailer;
use crate::config::Config;
use crate::deliver::message::{MessageFactory, Outgoing};
use crate::deliver::transport::Transport;
use crate::domain::SubscriberEmail;

/// Plain-text mails through a delivery transport, one connection per mail
/// (confirmations are rare; a pooled session would sit idle), built and DKIM-
/// signed by the digest's own [`MessageFactory`].
pub struct TransportMailer {
    transport: Arc<dyn Transport>,
    factory: MessageFactory,
}

impl TransportMailer {
    pub fn new(cfg: &Config, transport: Arc<dyn Transport>) -> anyhow::Result<TransportMailer> {
        Ok(TransportMailer {
            transport,
            factory: MessageFactory::from_config(cfg)?,
        })
    }

    /// The transport `[smtp]` asks for.
    pub fn from_config(cfg: &Config) -> anyhow::Result<TransportMailer> {
        TransportMailer::new(cfg, crate::deliver::transport::from_config(cfg)?)
    }

    fn build(&self, to: &SubscriberEmail, subject: &str, text: &str) -> anyhow::Result<Outgoing> {
        self.factory
            .build_service_mail(to.as_str(), subject, text, crate::clock::now())
            .context("cannot build the confirmation email")
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

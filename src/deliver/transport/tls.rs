//! TLS for SMTP, PostgreSQL and the bounce mailbox: rustls, the server's
//! certificate checked against the system's roots plus the CA file the config
//! names for that server (a relay or a database with a private CA).

use std::sync::Arc;

use rustls::client::WantsClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, ConfigBuilder, RootCertStore};

/// The server a client configuration is for: it names the config key of its CA
/// file in what goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Smtp,
    Postgres,
    Mailbox,
}

impl Peer {
    /// The config key naming this server's extra CA file.
    pub fn ca_file_key(self) -> &'static str {
        match self {
            Peer::Smtp => "smtp.ca_file",
            Peer::Postgres => "storage.ca_file",
            Peer::Mailbox => "bounces.mailbox_ca_file",
        }
    }

    fn server(self) -> &'static str {
        match self {
            Peer::Smtp => "the SMTP server",
            Peer::Postgres => "the PostgreSQL server",
            Peer::Mailbox => "the bounce mailbox's server",
        }
    }
}

/// Why a PEM file gives no certificate (the caller names the file).
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("not a readable certificate: {error}")]
    Unreadable {
        error: rustls::pki_types::pem::Error,
    },
    #[error("no PEM certificate (-----BEGIN CERTIFICATE-----) in it")]
    NoCertificate,
}

/// Why no client configuration could be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A certificate of the CA file is not one rustls takes as a root.
    #[error("{}: certificate refused: {error}", peer.ca_file_key())]
    CertificateRefused { peer: Peer, error: rustls::Error },
    /// The system has no CA certificates and the config names no CA file.
    #[error(
        "no root certificate to check {} against: install the system's CA \
         certificates (Debian: ca-certificates) or name a PEM file in {}",
        peer.server(),
        peer.ca_file_key()
    )]
    NoRoots { peer: Peer },
    #[error("TLS setup: {error}")]
    Protocols { error: rustls::Error },
}

/// The certificates of a PEM file (one or more `CERTIFICATE` blocks). Fails when
/// it holds none or one cannot be read.
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|error| PemError::Unreadable { error })?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate);
    }
    Ok(certs)
}

/// A client configuration for `peer` trusting the system's roots and `extra`.
pub fn client_config(
    extra: &[CertificateDer<'static>],
    peer: Peer,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    Ok(Arc::new(client_builder(extra, peer)?.with_no_client_auth()))
}

/// The same, short of the client's own certificate: the caller presents one
/// (`with_client_auth_cert`) or none.
pub fn client_builder(
    extra: &[CertificateDer<'static>],
    peer: Peer,
) -> Result<ConfigBuilder<ClientConfig, WantsClientCert>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "a system root certificate could not be read");
    }
    let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
    for c in extra {
        roots
            .add(c.clone())
            .map_err(|error| TlsSetupError::CertificateRefused { peer, error })?;
    }
    if roots.is_empty() {
        return Err(TlsSetupError::NoRoots { peer });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsSetupError::Protocols { error })?
        .with_root_certificates(roots))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_refused_with_the_reason() {
        let e = pem_certificates(b"just text\n").unwrap_err();
        assert!(matches!(e, PemError::NoCertificate), "{e:?}");
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        let e = pem_certificates(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n")
            .unwrap_err();
        assert!(matches!(e, PemError::Unreadable { .. }), "{e:?}");
        assert!(e.to_string().contains("not a readable certificate"), "{e}");
    }

    #[test]
    fn a_generated_certificate_is_read_and_trusted() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let pem = cert.cert.pem();
        let certs = pem_certificates(pem.as_bytes()).unwrap();
        assert_eq!(certs.len(), 1);
        client_config(&certs, Peer::Smtp).unwrap();
    }

    #[test]
    fn a_setup_error_names_the_ca_file_key_and_the_server_of_its_peer() {
        let e = TlsSetupError::NoRoots {
            peer: Peer::Postgres,
        }
        .to_string();
        assert!(e.contains("the PostgreSQL server"), "{e}");
        assert!(e.ends_with("name a PEM file in storage.ca_file"), "{e}");
        let e = TlsSetupError::CertificateRefused {
            peer: Peer::Mailbox,
            error: rustls::Error::General("bad".into()),
        }
        .to_string();
        assert!(
            e.starts_with("bounces.mailbox_ca_file: certificate refused"),
            "{e}"
        );
        let e = TlsSetupError::NoRoots { peer: Peer::Smtp }.to_string();
        assert!(e.contains("to check the SMTP server against"), "{e}");
        assert!(e.ends_with("smtp.ca_file"), "{e}");
    }
}

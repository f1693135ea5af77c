//! TLS for SMTP: rustls, the server's certificate checked against the system's
//! roots plus `[smtp] ca_file` (a relay with a private CA).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// The certificates of a PEM file (one or more `CERTIFICATE` blocks). Fails when
/// it holds none or one cannot be read.
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a readable certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into());
    }
    Ok(certs)
}

/// A client configuration trusting the system's roots and `extra`.
pub fn client_config(extra: &[CertificateDer<'static>]) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "a system root certificate could not be read");
    }
    let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
    for c in extra {
        roots
            .add(c.clone())
            .map_err(|e| format!("smtp.ca_file: certificate refused: {e}"))?;
    }
    if roots.is_empty() {
        return Err(
            "no root certificate to check the SMTP server against: install the system's CA \
             certificates (Debian: ca-certificates) or name a PEM file in smtp.ca_file"
                .into(),
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_refused_with_the_reason() {
        let e = pem_certificates(b"just text\n").unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = pem_certificates(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n")
            .unwrap_err();
        assert!(e.contains("not a readable certificate"), "{e}");
    }

    #[test]
    fn a_generated_certificate_is_read_and_trusted() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let pem = cert.cert.pem();
        let certs = pem_certificates(pem.as_bytes()).unwrap();
        assert_eq!(certs.len(), 1);
        client_config(&certs).unwrap();
    }
}

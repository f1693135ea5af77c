//! DKIM: the `[dkim]` key file read once when a run starts, and the signing
//! settings lettre signs every message with (which header fields, relaxed
//! canonicalization).

use std::path::Path;

use anyhow::Result;
use base64::Engine;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::HeaderName;
use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
use rsa::pkcs8::DecodePrivateKey;
use rsa::RsaPrivateKey;

use crate::config::Config;

/// The header fields the DKIM signature covers (`h=`): what a forwarder must not
/// change, the List-* headers included so that nobody can swap the unsubscribe link.
/// A field the message lacks (Reply-To without `[sender] reply_to`) is signed as
/// empty (RFC 6376 5.4), so it cannot be added later either. Not Content-Type:
/// lettre writes a multipart message's Content-Type with the body, after the
/// signature, so its signer would hash it as absent and every verifier would fail.
pub const SIGNED_HEADERS: [&str; 10] = [
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Message-ID",
    "MIME-Version",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// The signing settings of `[dkim]` (its key file read here), or `None` without it.
pub fn signing_config(cfg: &Config) -> Result<Option<DkimConfig>> {
    let Some(d) = &cfg.dkim else { return Ok(None) };
    let key = load_dkim_key(&cfg.resolve(&d.private_key_path))?;
    let signed = SIGNED_HEADERS
        .into_iter()
        .map(HeaderName::new_from_ascii_str)
        .collect();
    Ok(Some(DkimConfig::new(
        d.selector.clone(),
        d.domain.clone(),
        key,
        signed,
        DkimCanonicalization {
            header: DkimCanonicalizationType::Relaxed,
            body: DkimCanonicalizationType::Relaxed,
        },
    )))
}
/// Reads the `[dkim] private_key_path` file: an RSA key in PEM (PKCS#1 `BEGIN RSA
/// PRIVATE KEY` or PKCS#8 `BEGIN PRIVATE KEY`, as `openssl genrsa` writes), or an
/// Ed25519 key (RFC 8463) in PKCS#8 PEM or as base64 of its 32 secret bytes.
/// Called once, when the run starts.
pub fn load_dkim_key(path: &Path) -> Result<DkimSigningKey> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "[dkim] private_key_path: cannot read the DKIM key file {shown}: {e}. \
             Point private_key_path at a PEM RSA private key (relative paths start at the config file's folder)."
        )
    })?;
    let pem = text.trim();
    let rsa_pkcs1 = if pem.starts_with("-----BEGIN PRIVATE KEY-----") {
        match ed25519_seed_of_pkcs8(pem) {
            // lettre takes an Ed25519 key as the base64 of its 32 secret bytes.
            Some(seed) => Ok(base64::engine::general_purpose::STANDARD.encode(seed)),
            None => RsaPrivateKey::from_pkcs8_pem(pem)
                .map_err(|e| e.to_string())
                .and_then(|k| k.to_pkcs1_pem(LineEnding::LF).map_err(|e| e.to_string()))
                .map(|p| p.to_string()),
        }
    } else {
        Ok(pem.to_string())
    };
    let parsed = match rsa_pkcs1 {
        Ok(p) if p.starts_with("-----BEGIN") => {
            DkimSigningKey::new(&p, DkimSigningAlgorithm::Rsa).map_err(|e| e.to_string())
        }
        Ok(p) => DkimSigningKey::new(&p, DkimSigningAlgorithm::Ed25519).map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    parsed.map_err(|e| {
        anyhow::anyhow!(
            "[dkim] private_key_path: the DKIM key file {shown} holds no usable key ({e}). \
             It must be a PEM private key, RSA (e.g. from `openssl genrsa -out dkim.pem 2048`) \
             or Ed25519 (`openssl genpkey -algorithm ed25519 -out dkim.pem`)."
        )
    })
}

/// The 32 secret bytes of an Ed25519 key in PKCS#8 PEM (RFC 8410, what
/// `openssl genpkey -algorithm ed25519` writes), or `None` for any other key.
fn ed25519_seed_of_pkcs8(pem: &str) -> Option<[u8; 32]> {
    /// SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    let seed = der.strip_prefix(&PREFIX[..])?;
    seed.try_into().ok()
}

//! DKIM: the `[dkim]` key file read once when a run starts, and the signing
//! settings lettre signs every message with (which header fields, relaxed
//! canonicalization).

use std::path::{Path, PathBuf};

use base64::Engine;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey, DkimSigningKeyError,
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

/// Why the `[dkim] private_key_path` file gives no signing key.
#[derive(Debug, thiserror::Error)]
pub enum DkimKeyError {
    /// The file cannot be read.
    #[error(
        "[dkim] private_key_path: cannot read the DKIM key file {}: {error}. \
         Point private_key_path at a PEM RSA private key (relative paths start at the \
         config file's folder).",
        path.display()
    )]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file holds something that is not a key lettre can sign with.
    #[error(
        "[dkim] private_key_path: the DKIM key file {} holds no usable key ({problem}). \
         It must be a PEM private key, RSA (e.g. from `openssl genrsa -out dkim.pem 2048`) \
         or Ed25519 (`openssl genpkey -algorithm ed25519 -out dkim.pem`).",
        path.display()
    )]
    Unusable { path: PathBuf, problem: KeyProblem },
}

/// What is wrong with the key a DKIM key file holds.
#[derive(Debug, thiserror::Error)]
pub enum KeyProblem {
    /// `BEGIN PRIVATE KEY`, but neither Ed25519 nor a readable RSA key.
    #[error("{0}")]
    Pkcs8(rsa::pkcs8::Error),
    /// An RSA key that cannot be written back as PKCS#1 for the signer.
    #[error("{0}")]
    Pkcs1(rsa::pkcs1::Error),
    /// The signer refused it (not PEM, not base64, not a key of its algorithm).
    #[error("{0}")]
    Signer(DkimSigningKeyError),
}

/// The signing settings of `[dkim]` (its key file read here), or `None` without it.
pub fn signing_config(cfg: &Config) -> Result<Option<DkimConfig>, DkimKeyError> {
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
pub fn load_dkim_key(path: &Path) -> Result<DkimSigningKey, DkimKeyError> {
    let text = std::fs::read_to_string(path).map_err(|error| DkimKeyError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    key_of(text.trim()).map_err(|problem| DkimKeyError::Unusable {
        path: path.to_path_buf(),
        problem,
    })
}

/// The signing key a DKIM key file's text holds.
fn key_of(pem: &str) -> Result<DkimSigningKey, KeyProblem> {
    let rsa_pkcs1 = if pem.starts_with("-----BEGIN PRIVATE KEY-----") {
        match ed25519_seed_of_pkcs8(pem) {
            // lettre takes an Ed25519 key as the base64 of its 32 secret bytes.
            Some(seed) => base64::engine::general_purpose::STANDARD.encode(seed),
            None => RsaPrivateKey::from_pkcs8_pem(pem)
                .map_err(KeyProblem::Pkcs8)?
                .to_pkcs1_pem(LineEnding::LF)
                .map_err(KeyProblem::Pkcs1)?
                .to_string(),
        }
    } else {
        pem.to_string()
    };
    let algorithm = if rsa_pkcs1.starts_with("-----BEGIN") {
        DkimSigningAlgorithm::Rsa
    } else {
        DkimSigningAlgorithm::Ed25519
    };
    DkimSigningKey::new(&rsa_pkcs1, algorithm).map_err(KeyProblem::Signer)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dkim.pem");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn a_missing_key_file_is_a_read_error_naming_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.pem");
        let e = load_dkim_key(&path).err().unwrap();
        assert!(
            matches!(&e, DkimKeyError::Read { path: p, error } if *p == path
                && error.kind() == std::io::ErrorKind::NotFound),
            "{e:?}"
        );
        let words = e.to_string();
        assert!(words.contains("private_key_path"), "{words}");
        assert!(words.contains("absent.pem"), "{words}");
    }

    #[test]
    fn a_file_without_a_usable_key_says_which_part_refused_it() {
        let pem =
            |label: &str| format!("-----BEGIN {label}-----\nbm90IGEga2V5\n-----END {label}-----\n");
        for (text, refused_by) in [
            (pem("PRIVATE KEY"), "pkcs8"),
            (pem("RSA PRIVATE KEY"), "signer"),
            ("not base64 at all!".to_string(), "signer"),
        ] {
            let (_d, path) = key_file(&text);
            let e = load_dkim_key(&path).err().unwrap();
            let by = match &e {
                DkimKeyError::Unusable { problem, .. } => match problem {
                    KeyProblem::Pkcs8(_) => "pkcs8",
                    KeyProblem::Pkcs1(_) => "pkcs1",
                    KeyProblem::Signer(_) => "signer",
                },
                DkimKeyError::Read { .. } => "read",
            };
            assert_eq!(by, refused_by, "{text}: {e:?}");
            let words = e.to_string();
            assert!(words.contains("holds no usable key"), "{words}");
            assert!(words.contains("dkim.pem"), "{words}");
        }
    }
}

//! TLS to PostgreSQL. `sslmode=require`, `verify-ca` or `verify-full` in the URL
//! (or a CA file: `sslrootcert=PATH` in the URL, `[storage] ca_file`) turns it
//! on; the connection is then refused rather than made in clear. rustls, through
//! `tokio-postgres-rustls`; the server's certificate is always checked, chain
//! and host name, against the system's roots plus the CA file, whichever of the
//! three modes is named (stricter than libpq's `require` and `verify-ca`).
//! `sslcert=PATH&sslkey=PATH` (libpq's names) present a client certificate, for
//! servers that authenticate by certificate (`hostssl … cert` in pg_hba.conf);
//! both files are read once, when the store is opened. A connection refused
//! over a certificate, by the server or by us, says what to change after the
//! server's or rustls's words ([`refusal_hint`]).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::PrivateFileError;
use crate::deliver::transport::tls::{client_builder, pem_certificates, Peer, PemError};
use crate::store::StoreError;

/// What the URL asks for, ready to connect: the URL as the `postgres` crate
/// reads it (our parameters taken out) and the TLS to connect with, if any.
pub(super) struct Split {
    pub url: String,
    pub tls: Option<MakeRustlsConnect>,
}

fn invalid(place: &str, what: String) -> StoreError {
    StoreError::Invalid(format!("storage.database {place}: {what}"))
}

/// Reads `sslmode`, `sslrootcert`, `sslcert` and `sslkey` off `url`, and makes
/// the connector (reading the files it names).
pub(super) fn split(url: &str, place: &str) -> Result<Split, StoreError> {
    let (url, tls) = rewrite(url).map_err(|e| invalid(place, e.to_string()))?;
    let tls = match tls {
        Some(wanted) => Some(connector(&wanted, place)?),
        None => None,
    };
    Ok(Split { url, tls })
}

/// The TLS a URL asks for: the files it names, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// `sslrootcert`: a CA file trusted on top of the system's roots.
    pub root: Option<String>,
    /// `sslcert` and `sslkey`: the certificate to present and its key.
    pub client: Option<ClientCert>,
}

/// A client certificate's files (`sslcert`, `sslkey`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert: String,
    pub key: String,
}

/// A URL whose TLS parameters cannot go together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsUrlError {
    #[error(
        "sslmode={mode} is not known: use disable, require or verify-full \
         (the certificate is checked in every mode but disable)"
    )]
    UnknownSslMode { mode: String },
    #[error(
        "sslcert={cert} without sslkey: add sslkey=PATH, the PEM file of this \
         certificate's private key"
    )]
    CertWithoutKey { cert: String },
    #[error(
        "sslkey={key} without sslcert: add sslcert=PATH, the PEM file of the \
         client certificate this key belongs to"
    )]
    KeyWithoutCert { key: String },
    #[error(
        "sslcert={cert} with sslmode=disable: a client certificate is only sent \
         over TLS; use sslmode=verify-full, or take sslcert and sslkey off"
    )]
    CertInClear { cert: String },
}

/// `url` as the `postgres` crate reads it (`sslmode` `require` or `disable`,
/// none of `sslrootcert`, `sslcert`, `sslkey`), and whether TLS is wanted, with
/// which files. No I/O: the config check uses it too.
pub fn rewrite(url: &str) -> Result<(String, Option<Wanted>), TlsUrlError> {
    let Ok(mut parsed) = url::Url::parse(url) else {
        // Not a URL the url crate reads: leave it to the postgres crate's message.
        return Ok((url.to_string(), None));
    };
    let mut mode = None;
    let (mut root, mut cert, mut key) = (None, None, None);
    let mut rest = Vec::new();
    for (k, v) in parsed.query_pairs() {
        match k.as_ref() {
            "sslmode" => mode = Some(v.into_owned()),
            "sslrootcert" => root = Some(v.into_owned()),
            "sslcert" => cert = Some(v.into_owned()),
            "sslkey" => key = Some(v.into_owned()),
            _ => rest.push((k.into_owned(), v.into_owned())),
        }
    }
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some(ClientCert { cert, key }),
        (Some(cert), None) => return Err(TlsUrlError::CertWithoutKey { cert }),
        (None, Some(key)) => return Err(TlsUrlError::KeyWithoutCert { key }),
        (None, None) => None,
    };
    let wanted = match mode.as_deref() {
        Some("require" | "verify-ca" | "verify-full") => true,
        Some("disable") => {
            if let Some(c) = client {
                return Err(TlsUrlError::CertInClear { cert: c.cert });
            }
            false
        }
        // `prefer` (the postgres crate's default) would fall back to clear
        // text: with a CA file or a client certificate given, TLS it is; else
        // as before, in clear.
        Some("prefer") | None => root.is_some() || client.is_some(),
        Some(other) => {
            return Err(TlsUrlError::UnknownSslMode {
                mode: other.to_string(),
            })
        }
    };
    {
        let mut q = parsed.query_pairs_mut();
        q.clear();
        for (k, v) in &rest {
            q.append_pair(k, v);
        }
        q.append_pair("sslmode", if wanted { "require" } else { "disable" });
    }
    Ok((
        parsed.to_string(),
        wanted.then_some(Wanted { root, client }),
    ))
}

/// Why the client certificate of the URL cannot be presented.
#[derive(Debug, thiserror::Error)]
pub enum ClientCertError {
    #[error(
        "sslcert {path}: cannot read it ({error}): name the PEM file of the \
         client certificate"
    )]
    CertUnreadable { path: String, error: std::io::Error },
    #[error("sslcert {path}: {error}: name the PEM file of the client certificate")]
    NoCertificate { path: String, error: PemError },
    /// The key file is missing or cannot be read.
    #[error(transparent)]
    KeyFile(#[from] PrivateFileError),
    /// The key file is open to others beyond what libpq allows ([`key_mode_allowed`]).
    #[error(
        "sslkey {path} can be read or written by others (mode {mode:o}, owned by {owner}): \
         run `chmod {fix} {path}` (as libpq: 0600 or less, or 0640 or less when root owns the file)",
        owner = if *by_root { "root" } else { "a user other than root" },
        fix = if *by_root { "640" } else { "600" },
    )]
    KeyExposed {
        path: String,
        mode: u32,
        by_root: bool,
    },
    #[error(
        "sslkey {path}: no private key in it (-----BEGIN PRIVATE KEY-----, \
         RSA PRIVATE KEY or EC PRIVATE KEY){detail}: name the PEM file of the \
         client certificate's key"
    )]
    NoKey { path: String, detail: String },
    #[error(
        "sslkey {key} is not the key of the certificate in sslcert {cert}: name \
         the key the certificate was issued for"
    )]
    Mismatch { cert: String, key: String },
    #[error("sslcert {cert} with sslkey {key}: {error}: use an RSA, ECDSA or Ed25519 key")]
    Refused {
        cert: String,
        key: String,
        error: rustls::Error,
    },
}

/// The certificate chain of `sslcert` (the client's first).
fn client_chain(path: &str) -> Result<Vec<CertificateDer<'static>>, ClientCertError> {
    let pem = std::fs::read(path).map_err(|error| ClientCertError::CertUnreadable {
        path: path.to_string(),
        error,
    })?;
    pem_certificates(&pem).map_err(|error| ClientCertError::NoCertificate {
        path: path.to_string(),
        error,
    })
}

/// Whether a key file of `mode` (its permission bits), owned by root or not,
/// may be used: libpq's rule. A file owned by root may be read by its group
/// (0640 or less), so that a key kept by the system can be shared with a
/// group; any other file must be its owner's alone (0600 or less). Who the
/// owner is need not be checked further: a process that can read a 0600 file
/// is its owner or root.
pub fn key_mode_allowed(mode: u32, owned_by_root: bool) -> bool {
    let others = if owned_by_root {
        0o037 // group write or execute, anything for the world
    } else {
        0o077
    };
    mode & others == 0
}

/// The private key of `sslkey` (PKCS#8, PKCS#1 or SEC1), refused when its
/// file is open to others beyond [`key_mode_allowed`].
fn client_key(path: &str) -> Result<PrivateKeyDer<'static>, ClientCertError> {
    let pem = crate::config::read_private_file(
        std::path::Path::new(path),
        "sslkey",
        "Name the PEM file of the client certificate's key (chmod 600) in sslkey=PATH",
        key_mode_allowed,
    )
    .map_err(|e| match e {
        PrivateFileError::Exposed { mode, by_root, .. } => ClientCertError::KeyExposed {
            path: path.to_string(),
            mode,
            by_root,
        },
        other => ClientCertError::KeyFile(other),
    })?;
    let no_key = |detail: String| ClientCertError::NoKey {
        path: path.to_string(),
        detail,
    };
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => no_key(String::new()),
        other => no_key(format!(" ({other})")),
    })
}

fn connector(wanted: &Wanted, place: &str) -> Result<MakeRustlsConnect, StoreError> {
    let extra = match &wanted.root {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                invalid(
                    place,
                    format!(
                        "cannot read the CA file {path} (sslrootcert / [storage] ca_file): {e}"
                    ),
                )
            })?;
            pem_certificates(&pem)
                .map_err(|e| invalid(place, format!("the CA file {path}: {e}")))?
        }
        None => Vec::new(),
    };
    let builder =
        client_builder(&extra, Peer::Postgres).map_err(|e| invalid(place, e.to_string()))?;
    let config = match &wanted.client {
        None => builder.with_no_client_auth(),
        Some(files) => client_auth(builder, files).map_err(|e| invalid(place, e.to_string()))?,
    };
    Ok(MakeRustlsConnect::new(config))
}

/// `builder` presenting the certificate of `files`; rustls checks here that
/// the key is the certificate's.
fn client_auth(
    builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    files: &ClientCert,
) -> Result<rustls::ClientConfig, ClientCertError> {
    let chain = client_chain(&files.cert)?;
    let key = client_key(&files.key)?;
    builder
        .with_client_auth_cert(chain, key)
        .map_err(|error| match error {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                ClientCertError::Mismatch {
                    cert: files.cert.clone(),
                    key: files.key.clone(),
                }
            }
            error => ClientCertError::Refused {
                cert: files.cert.clone(),
                key: files.key.clone(),
                error,
            },
        })
}

/// Why the server and we did not get through TLS or certificate
/// authentication, as far as the connection's error tells.
#[derive(Debug, Clone, PartialEq)]
enum Refusal {
    /// The server takes this database over TLS only (`hostssl` lines in
    /// pg_hba.conf), and we came in clear.
    TlsOnly,
    /// The server authenticates by certificate and was shown none.
    CertificateWanted,
    /// The server trusts the client certificate, but not for this user.
    NotTheUser,
    /// The server refused the client certificate at the TLS handshake.
    ClientCertificate(rustls::AlertDescription),
    /// We refused the server's certificate.
    ServerCertificate(rustls::CertificateError),
}

impl Refusal {
    /// What `error` (its whole chain) says, if it is a refusal of ours.
    fn of(error: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
        let mut link = Some(error);
        while let Some(e) = link {
            // tokio-rustls hands rustls's error inside an io::Error, whose
            // `source` skips it.
            let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
                e.downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            });
            match tls {
                Some(rustls::Error::AlertReceived(alert)) => {
                    return Some(Refusal::ClientCertificate(*alert))
                }
                Some(rustls::Error::InvalidCertificate(c)) => {
                    return Some(Refusal::ServerCertificate(c.clone()))
                }
                _ => {}
            }
            if let Some(db) = e.downcast_ref::<postgres::error::DbError>() {
                return Self::said(db.code(), db.message());
            }
            link = e.source();
        }
        None
    }

    /// What the server's FATAL message says. PostgreSQL answers all of these
    /// with one code (28000), so the words tell them apart: a server whose
    /// `lc_messages` is not English gets no hint, only its message.
    fn said(code: &postgres::error::SqlState, message: &str) -> Option<Refusal> {
        if *code != postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            return None;
        }
        if message.contains("requires a valid client certificate") {
            Some(Refusal::CertificateWanted)
        } else if message.starts_with("certificate authentication failed for user")
            || message.contains("(clientcert=verify-full) failed for user")
        {
            Some(Refusal::NotTheUser)
        } else if message.contains("pg_hba.conf") && message.ends_with("no encryption") {
            // No line for connections in clear, or a `hostnossl … reject` one.
            Some(Refusal::TlsOnly)
        } else {
            None
        }
    }

    /// What to do about it, with the URL's TLS (`wanted`), for database user `user`.
    fn hint(&self, wanted: Option<&Wanted>, user: &str) -> Option<String> {
        use rustls::AlertDescription as A;
        use rustls::CertificateError as C;
        let client = wanted.and_then(|w| w.client.as_ref());
        let add_a_certificate = || {
            format!(
                "the server authenticates by certificate: add sslcert=PATH&sslkey=PATH \
                 to the URL, a certificate signed by a CA in the server's ssl_ca_file \
                 whose CN is the database user `{user}`"
            )
        };
        let checked_in_every_mode = "(checked in every sslmode but disable, require too)";
        Some(match (self, client) {
            (Refusal::TlsOnly, _) if wanted.is_none() => {
                "the server takes this database over TLS only: add sslmode=verify-full to \
                 the URL, and sslrootcert=PATH (or [storage] ca_file) naming the CA that \
                 signed the server's certificate"
                    .to_string()
            }
            (Refusal::TlsOnly, _) => return None,
            (Refusal::CertificateWanted, None)
            | (Refusal::NotTheUser, None)
            | (Refusal::ClientCertificate(A::CertificateRequired), None) => add_a_certificate(),
            (Refusal::CertificateWanted, Some(c)) => format!(
                "the server did not take the certificate in sslcert {}: sign it with a CA \
                 in the server's ssl_ca_file",
                c.cert
            ),
            (Refusal::NotTheUser, Some(c)) => format!(
                "the certificate in sslcert {} is not for the database user `{user}`: its \
                 CN must be `{user}` (or a map in the server's pg_ident.conf must allow it)",
                c.cert
            ),
            (Refusal::ClientCertificate(alert), Some(c)) => match alert {
                A::UnknownCA
                | A::BadCertificate
                | A::DecryptError
                | A::CertificateUnknown
                | A::UnsupportedCertificate
                | A::AccessDenied => format!(
                    "the server does not trust the certificate in sslcert {}: sign it with \
                     a CA in the server's ssl_ca_file",
                    c.cert
                ),
                A::CertificateExpired => format!(
                    "the server finds the certificate in sslcert {} expired or not yet \
                     valid: issue a new one",
                    c.cert
                ),
                A::CertificateRevoked => format!(
                    "the server lists the certificate in sslcert {} as revoked (its \
                     ssl_crl_file): issue a new one",
                    c.cert
                ),
                _ => return None,
            },
            (Refusal::ClientCertificate(_), None) => return None,
            (Refusal::ServerCertificate(e), _) => match e {
                C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                    "the server's certificate is not for the host of the URL: write the \
                     host as the certificate names it, or have the certificate made for \
                     this host {checked_in_every_mode}"
                ),
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. } => {
                    "the server's certificate has expired or is not valid yet: renew it on \
                     the server (its ssl_cert_file)"
                        .to_string()
                }
                C::UnknownIssuer | C::BadSignature => {
                    let trusted = match wanted.and_then(|w| w.root.as_deref()) {
                        Some(root) => format!("the CA in sslrootcert {root} or a system root"),
                        None => "a system root (no sslrootcert in the URL)".to_string(),
                    };
                    format!(
                        "the server's certificate is not signed by {trusted}: name the CA \
                         that signed it in sslrootcert=PATH (or [storage] ca_file) \
                         {checked_in_every_mode}"
                    )
                }
                _ => return None,
            },
        })
    }
}

/// What to do when connecting to `url` (as written, the password hidden or
/// not) as `user` failed with `error`, if the error is a TLS or certificate
/// refusal: the server wants a certificate, or does not trust ours, or we do
/// not trust its.
pub(super) fn refusal_hint(
    error: &(dyn std::error::Error + 'static),
    url: &str,
    user: &str,
) -> Option<String> {
    let wanted = rewrite(url).ok().and_then(|(_, wanted)| wanted);
    Refusal::of(error)?.hint(wanted.as_ref(), user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_parameters_are_taken_off_and_the_mode_is_one_the_postgres_crate_reads() {
        let s = split("postgres://u@db:5432/d?application_name=x", "db").unwrap();
        assert!(s.tls.is_none());
        assert_eq!(
            s.url,
            "postgres://u@db:5432/d?application_name=x&sslmode=disable"
        );
        let s = split("postgres://u@db/d?sslmode=verify-full", "db").unwrap();
        assert!(s.tls.is_some());
        assert_eq!(s.url, "postgres://u@db/d?sslmode=require");
        let e = split("postgres://u@db/d?sslmode=allow", "db")
            .err()
            .unwrap();
        assert!(e.to_string().contains("sslmode=allow is not known"), "{e}");
        assert_eq!(
            rewrite("postgres://u@db/d?sslmode=allow").unwrap_err(),
            TlsUrlError::UnknownSslMode {
                mode: "allow".into()
            }
        );
        // libpq's `prefer` and no mode: TLS only when a CA file is named.
        assert_eq!(
            rewrite("postgres://u@db/d?sslmode=prefer&sslrootcert=ca.pem").unwrap(),
            (
                "postgres://u@db/d?sslmode=require".to_string(),
                Some(Wanted {
                    root: Some("ca.pem".to_string()),
                    client: None
                })
            )
        );
        let e = split("postgres://u@db/d?sslrootcert=/nowhere.pem", "db")
            .err()
            .unwrap();
        assert!(e.to_string().contains("/nowhere.pem"), "{e}");
    }

    #[test]
    fn sslcert_and_sslkey_are_read_off_the_url_and_turn_tls_on() {
        let (url, tls) =
            rewrite("postgres://u@db/d?sslcert=%2Fk%2Fc.pem&application_name=x&sslkey=/k/c.key")
                .unwrap();
        assert_eq!(url, "postgres://u@db/d?application_name=x&sslmode=require");
        assert_eq!(
            tls,
            Some(Wanted {
                root: None,
                client: Some(ClientCert {
                    cert: "/k/c.pem".into(),
                    key: "/k/c.key".into()
                })
            })
        );
        let (url, tls) =
            rewrite("postgres://u@db/d?sslmode=verify-full&sslrootcert=ca.pem&sslcert=c&sslkey=k")
                .unwrap();
        assert_eq!(url, "postgres://u@db/d?sslmode=require");
        let tls = tls.unwrap();
        assert_eq!(tls.root.as_deref(), Some("ca.pem"));
        assert_eq!(tls.client.unwrap().key, "k");
    }

    #[test]
    fn sslcert_and_sslkey_go_together_and_only_over_tls() {
        let e = rewrite("postgres://u@db/d?sslmode=verify-full&sslcert=/k/c.pem").unwrap_err();
        assert_eq!(
            e,
            TlsUrlError::CertWithoutKey {
                cert: "/k/c.pem".into()
            }
        );
        assert!(e.to_string().contains("add sslkey=PATH"), "{e}");
        let e = rewrite("postgres://u@db/d?sslkey=/k/c.key").unwrap_err();
        assert_eq!(
            e,
            TlsUrlError::KeyWithoutCert {
                key: "/k/c.key".into()
            }
        );
        assert!(e.to_string().contains("add sslcert=PATH"), "{e}");
        let e =
            rewrite("postgres://u@db/d?sslmode=disable&sslcert=c.pem&sslkey=c.key").unwrap_err();
        assert_eq!(
            e,
            TlsUrlError::CertInClear {
                cert: "c.pem".into()
            }
        );
        assert!(e.to_string().contains("use sslmode=verify-full"), "{e}");
        // Through `split`, the database is named too.
        let e = split("postgres://u@db/d?sslcert=c.pem", "postgres://u@db/d")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("storage.database postgres://u@db/d: sslcert=c.pem without sslkey"),
            "{e}"
        );
    }

    /// A folder holding the named files: a certificate and its key (0600).
    fn files(cert: &[u8], key: &[u8]) -> (tempfile::TempDir, String, String) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("client.crt"), dir.path().join("client.key"));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = |p: std::path::PathBuf| p.display().to_string();
        (dir, s(c), s(k))
    }

    /// Whether a connector is made with these files; else the error.
    fn open_with(cert: &str, key: &str) -> Result<bool, String> {
        split(
            &format!("postgres://u@db/d?sslcert={cert}&sslkey={key}"),
            "db",
        )
        .map(|s| s.tls.is_some())
        .map_err(|e| e.to_string())
    }

    // Made with openssl: `genrsa -traditional` and `ecparam -genkey -noout`.
    const RSA_PKCS1_KEY: &[u8] = include_bytes!("../../../tests/fixtures/pg-client/rsa-pkcs1.key");
    const RSA_CERT: &[u8] = include_bytes!("../../../tests/fixtures/pg-client/rsa.crt");
    const EC_SEC1_KEY: &[u8] = include_bytes!("../../../tests/fixtures/pg-client/ec-sec1.key");
    const EC_CERT: &[u8] = include_bytes!("../../../tests/fixtures/pg-client/ec.crt");

    #[test]
    fn a_client_certificate_is_taken_with_an_rsa_ecdsa_or_ed25519_key_in_each_pem_form() {
        let ecdsa = rcgen::generate_simple_self_signed(vec!["digestif".into()]).unwrap();
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let ed_cert = rcgen::CertificateParams::new(vec!["digestif".into()])
            .unwrap()
            .self_signed(&ed)
            .unwrap();
        let pairs: [(&str, Vec<u8>, Vec<u8>); 4] = [
            ("RSA, PKCS#1", RSA_CERT.to_vec(), RSA_PKCS1_KEY.to_vec()),
            ("ECDSA, SEC1", EC_CERT.to_vec(), EC_SEC1_KEY.to_vec()),
            (
                "ECDSA, PKCS#8",
                ecdsa.cert.pem().into_bytes(),
                ecdsa.key_pair.serialize_pem().into_bytes(),
            ),
            (
                "Ed25519, PKCS#8",
                ed_cert.pem().into_bytes(),
                ed.serialize_pem().into_bytes(),
            ),
        ];
        for (what, cert, key) in pairs {
            let (_dir, c, k) = files(&cert, &key);
            let tls = open_with(&c, &k).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(tls, "{what}");
        }
    }

    #[test]
    fn a_missing_or_wrong_client_certificate_file_is_named_with_what_to_do() {
        let (dir, c, k) = files(EC_CERT, EC_SEC1_KEY);
        let gone = dir.path().join("gone.pem").display().to_string();
        let e = open_with(&gone, &k).unwrap_err();
        assert!(
            e.contains(&format!("sslcert {gone}: cannot read it")),
            "{e}"
        );
        // The key given as the certificate.
        let e = open_with(&k, &k).unwrap_err();
        assert!(
            e.contains(&format!("sslcert {k}: no PEM certificate")),
            "{e}"
        );
        assert!(
            e.ends_with("name the PEM file of the client certificate"),
            "{e}"
        );
        let e = open_with(&c, &gone).unwrap_err();
        assert!(e.contains(&format!("sslkey {gone}: ")), "{e}");
        assert!(e.contains("in sslkey=PATH"), "{e}");
        // The certificate given as the key (made private, so that the content is what fails).
        let (_d2, _, cert_as_key) = files(EC_CERT, EC_CERT);
        let e = open_with(&c, &cert_as_key).unwrap_err();
        assert!(
            e.contains(&format!("sslkey {cert_as_key}: no private key in it")),
            "{e}"
        );
    }

    #[test]
    fn a_key_file_is_its_owners_alone_or_root_owned_and_read_by_its_group_as_libpq_has_it() {
        for (mode, by_root, allowed) in [
            (0o600, false, true),
            (0o400, false, true),
            (0o640, false, false),
            (0o604, false, false),
            (0o610, false, false),
            (0o600, true, true),
            (0o640, true, true),
            (0o440, true, true),
            (0o660, true, false),
            (0o650, true, false),
            (0o644, true, false),
            (0o641, true, false),
        ] {
            assert_eq!(
                key_mode_allowed(mode, by_root),
                allowed,
                "mode {mode:o}, owned by root: {by_root}"
            );
        }
    }

    /// `split` with the files of `files` once the key file has `mode`, and
    /// belongs to `owner` if given.
    fn open_with_key_mode(mode: u32, owner: Option<u32>) -> Result<bool, String> {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, c, k) = files(EC_CERT, EC_SEC1_KEY);
        if let Some(uid) = owner {
            std::os::unix::fs::chown(&k, Some(uid), None).unwrap();
        }
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(mode)).unwrap();
        open_with(&c, &k).map_err(|e| e.replace(&k, "KEY"))
    }

    #[test]
    fn a_key_file_others_may_read_is_refused_as_libpq_does() {
        use std::os::unix::fs::MetadataExt;
        // Who we are: the owner of what we make.
        let me = std::fs::metadata(tempfile::tempdir().unwrap().path())
            .unwrap()
            .uid();
        // Made by us; 0600 is taken whoever we are.
        assert_eq!(open_with_key_mode(0o600, None), Ok(true));
        let e = open_with_key_mode(0o644, None).unwrap_err();
        let owner = if me == 0 {
            "root"
        } else {
            "a user other than root"
        };
        let fix = if me == 0 { "640" } else { "600" };
        assert!(
            e.contains(&format!(
                "sslkey KEY can be read or written by others (mode 644, owned by {owner}): \
                 run `chmod {fix} KEY` (as libpq: 0600 or less, or 0640 or less when root owns the file)"
            )),
            "{e}"
        );
        if me == 0 {
            // Root's file, its group may read it; another user's file may not.
            assert_eq!(open_with_key_mode(0o640, None), Ok(true));
            let e = open_with_key_mode(0o640, Some(65534)).unwrap_err();
            assert!(
                e.contains("(mode 640, owned by a user other than root): run `chmod 600 KEY`"),
                "{e}"
            );
            assert_eq!(open_with_key_mode(0o600, Some(65534)), Ok(true));
        } else {
            let e = open_with_key_mode(0o640, None).unwrap_err();
            assert!(e.contains("run `chmod 600 KEY`"), "{e}");
        }
    }

    /// The refusal in `error` and what it makes us say, for user `reader`.
    fn hint_for(error: rustls::Error, url: &str) -> Option<String> {
        // As tokio-rustls hands it on: inside an io::Error.
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, error);
        refusal_hint(&io, url, "reader")
    }

    #[test]
    fn a_certificate_refused_at_the_handshake_says_which_file_to_change() {
        use rustls::{AlertDescription as A, CertificateError as C, Error as E};
        let with_cert =
            "postgres://reader@db/d?sslmode=verify-full&sslcert=/k/c.pem&sslkey=/k/c.key";
        for alert in [A::UnknownCA, A::BadCertificate, A::DecryptError] {
            let hint = hint_for(E::AlertReceived(alert), with_cert).unwrap();
            assert_eq!(
                hint,
                "the server does not trust the certificate in sslcert /k/c.pem: sign it \
                 with a CA in the server's ssl_ca_file",
                "{alert:?}"
            );
        }
        let hint = hint_for(E::AlertReceived(A::CertificateExpired), with_cert).unwrap();
        assert!(hint.contains("/k/c.pem expired"), "{hint}");
        // TLS 1.3's "certificate required", when none was presented.
        let bare = "postgres://reader@db/d?sslmode=verify-full";
        let hint = hint_for(E::AlertReceived(A::CertificateRequired), bare).unwrap();
        assert!(
            hint.contains("add sslcert=PATH&sslkey=PATH") && hint.contains("user `reader`"),
            "{hint}"
        );
        // An alert that says nothing of a certificate, or about a certificate we did not send.
        assert_eq!(
            hint_for(E::AlertReceived(A::HandshakeFailure), with_cert),
            None
        );
        assert_eq!(hint_for(E::AlertReceived(A::UnknownCA), bare), None);

        // The server's certificate, refused by us: the CA file and the mode are named.
        let hint = hint_for(E::InvalidCertificate(C::UnknownIssuer), bare).unwrap();
        assert!(
            hint.contains("a system root (no sslrootcert in the URL)")
                && hint.contains("in sslrootcert=PATH (or [storage] ca_file)")
                && hint.contains("every sslmode but disable"),
            "{hint}"
        );
        let hint = hint_for(E::InvalidCertificate(C::Expired), bare).unwrap();
        assert!(hint.contains("renew it on the server"), "{hint}");
        let hint = hint_for(E::InvalidCertificate(C::NotValidForName), bare).unwrap();
        assert!(hint.contains("not for the host of the URL"), "{hint}");
        // Not a certificate matter, nor a TLS one: no hint.
        assert_eq!(hint_for(E::InvalidCertificate(C::BadEncoding), bare), None);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(refusal_hint(&refused, bare, "reader"), None);
    }

    #[test]
    fn the_servers_words_on_certificates_are_told_apart() {
        use postgres::error::SqlState;
        let auth = SqlState::INVALID_AUTHORIZATION_SPECIFICATION;
        let said = |m: &str| Refusal::said(&auth, m);
        assert_eq!(
            said("connection requires a valid client certificate"),
            Some(Refusal::CertificateWanted)
        );
        assert_eq!(
            said("certificate authentication failed for user \"u\""),
            Some(Refusal::NotTheUser)
        );
        assert_eq!(
            said("certificate validation (clientcert=verify-full) failed for user \"u\": CN mismatch"),
            Some(Refusal::NotTheUser)
        );
        assert_eq!(
            said("no pg_hba.conf entry for host \"10.0.0.1\", user \"u\", database \"d\", no encryption"),
            Some(Refusal::TlsOnly)
        );
        assert_eq!(said("password authentication failed for user \"u\""), None);
        assert_eq!(
            Refusal::said(
                &SqlState::TOO_MANY_CONNECTIONS,
                "requires a valid client certificate"
            ),
            None
        );
        // What is said, with the URL's files.
        let with_cert = Wanted {
            root: None,
            client: Some(ClientCert {
                cert: "/k/c.pem".into(),
                key: "/k/c.key".into(),
            }),
        };
        for (refusal, said) in [
            (
                Refusal::NotTheUser,
                "the certificate in sslcert /k/c.pem is not for the database user \
                 `reader`: its CN must be `reader`",
            ),
            (
                Refusal::CertificateWanted,
                "the server did not take the certificate in sslcert /k/c.pem",
            ),
        ] {
            let hint = refusal.hint(Some(&with_cert), "reader").unwrap();
            assert!(hint.starts_with(said), "{hint}");
        }
        // Already over TLS: the `hostssl` hint would be wrong.
        assert_eq!(Refusal::TlsOnly.hint(Some(&with_cert), "reader"), None);
        assert!(Refusal::TlsOnly
            .hint(None, "reader")
            .unwrap()
            .contains("add sslmode=verify-full"));
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused_when_the_store_opens() {
        let (_dir, c, _) = files(EC_CERT, EC_SEC1_KEY);
        let (_d2, _, other_key) = files(RSA_CERT, RSA_PKCS1_KEY);
        let e = open_with(&c, &other_key).unwrap_err();
        assert!(
            e.contains(&format!(
                "sslkey {other_key} is not the key of the certificate in sslcert {c}"
            )),
            "{e}"
        );
        let another_ec = rcgen::generate_simple_self_signed(vec!["digestif".into()]).unwrap();
        let (_d3, _, ec_key) = files(b"", another_ec.key_pair.serialize_pem().as_bytes());
        let e = open_with(&c, &ec_key).unwrap_err();
        assert!(e.contains("is not the key of the certificate"), "{e}");
    }
}

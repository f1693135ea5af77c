//! TLS to PostgreSQL. `sslmode=require`, `verify-ca` or `verify-full` in the URL
//! (or a CA file: `sslrootcert=PATH` in the URL, `[storage] ca_file`) turns it
//! on; the connection is then refused rather than made in clear. rustls, through
//! `tokio-postgres-rustls`; the server's certificate is always checked, chain
//! and host name, against the system's roots plus the CA file, whichever of the
//! three modes is named (stricter than libpq's `require` and `verify-ca`).

use tokio_postgres_rustls::MakeRustlsConnect;

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

/// Reads `sslmode` and `sslrootcert` off `url`, and makes the connector.
pub(super) fn split(url: &str, place: &str) -> Result<Split, StoreError> {
    let (url, tls) = rewrite(url).map_err(|e| invalid(place, e.to_string()))?;
    let tls = match tls {
        Some(root) => Some(connector(root.as_deref(), place)?),
        None => None,
    };
    Ok(Split { url, tls })
}

/// An `sslmode` in the URL that is not one this client reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "sslmode={mode} is not known: use disable, require or verify-full \
     (the certificate is checked in every mode but disable)"
)]
pub struct UnknownSslMode {
    pub mode: String,
}

/// `url` as the `postgres` crate reads it (`sslmode` `require` or `disable`,
/// no `sslrootcert`), and whether TLS is wanted, with which CA file. No I/O:
/// the config check uses it too.
pub fn rewrite(url: &str) -> Result<(String, Option<Option<String>>), UnknownSslMode> {
    let Ok(mut parsed) = url::Url::parse(url) else {
        // Not a URL the url crate reads: leave it to the postgres crate's message.
        return Ok((url.to_string(), None));
    };
    let mut mode = None;
    let mut root = None;
    let mut rest = Vec::new();
    for (k, v) in parsed.query_pairs() {
        match k.as_ref() {
            "sslmode" => mode = Some(v.into_owned()),
            "sslrootcert" => root = Some(v.into_owned()),
            _ => rest.push((k.into_owned(), v.into_owned())),
        }
    }
    let wanted = match mode.as_deref() {
        Some("require" | "verify-ca" | "verify-full") => true,
        Some("disable") => false,
        // `prefer` (the postgres crate's default) would fall back to clear
        // text: with a CA file given, TLS it is; else as before, in clear.
        Some("prefer") | None => root.is_some(),
        Some(other) => {
            return Err(UnknownSslMode {
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
    Ok((parsed.to_string(), wanted.then_some(root)))
}

fn connector(root: Option<&str>, place: &str) -> Result<MakeRustlsConnect, StoreError> {
    use crate::deliver::transport::tls::{client_config, pem_certificates, Peer};
    let extra = match root {
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
    let config =
        client_config(&extra, Peer::Postgres).map_err(|e| invalid(place, e.to_string()))?;
    Ok(MakeRustlsConnect::new(std::sync::Arc::unwrap_or_clone(
        config,
    )))
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
            UnknownSslMode {
                mode: "allow".into()
            }
        );
        // libpq's `prefer` and no mode: TLS only when a CA file is named.
        assert_eq!(
            rewrite("postgres://u@db/d?sslmode=prefer&sslrootcert=ca.pem").unwrap(),
            (
                "postgres://u@db/d?sslmode=require".to_string(),
                Some(Some("ca.pem".to_string()))
            )
        );
        let e = split("postgres://u@db/d?sslrootcert=/nowhere.pem", "db")
            .err()
            .unwrap();
        assert!(e.to_string().contains("/nowhere.pem"), "{e}");
    }
}

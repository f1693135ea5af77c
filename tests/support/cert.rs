//! A self-signed certificate for "localhost" made inside the test, as PEM files,
//! for the TLS servers and for `smtp.ca_file`.

use std::path::PathBuf;

pub struct Cert {
    _dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Cert {
    /// A fresh key and certificate valid for "localhost".
    pub fn localhost() -> Cert {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
        Cert {
            _dir: dir,
            cert,
            key,
        }
    }

    /// The server flags that use this certificate: `--tls-cert CERT --tls-key KEY`.
    pub fn flags(&self) -> [&str; 4] {
        [
            "--tls-cert",
            self.cert.to_str().unwrap(),
            "--tls-key",
            self.key.to_str().unwrap(),
        ]
    }
}

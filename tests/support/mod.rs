//! Test harness: a real SMTP server (aiosmtpd, in Python) on a free loopback
//! port, with fault modes, writing every message it accepts to a folder.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod site;

/// A running SMTP server; killed when dropped.
pub struct SmtpServer {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// One message as the server received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub raw: Vec<u8>,
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    /// The message came over TLS (STARTTLS or implicit).
    pub tls: bool,
}

impl Received {
    /// The single envelope recipient.
    pub fn rcpt(&self) -> &str {
        assert_eq!(self.rcpt_tos.len(), 1, "one recipient per message");
        &self.rcpt_tos[0]
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_server.py")
}

/// Installs the Python `packages` with pip unless `import` already succeeds
/// (as `scripts/test.sh` does); `tests` names the tests that need them.
pub fn ensure_python(import: &str, packages: &[&str], tests: &str) {
    let ok = Command::new("python3")
        .args(["-c", import])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        let st = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(packages)
            .status()
            .unwrap_or_else(|_| panic!("python3 is needed for the {tests} tests"));
        assert!(st.success(), "cannot install {}", packages[0]);
    }
}

fn ensure_aiosmtpd() {
    ensure_python("import aiosmtpd", &["aiosmtpd"], "SMTP");
}

impl SmtpServer {
    /// Starts the server with extra flags (`--fail-first-data 451`, `--reject-rcpt a@b:550`,
    /// `--drop-after N`, `--delay-ms D`, `--pipelining`) and waits until it accepts connections.
    pub fn start(flags: &[&str]) -> SmtpServer {
        ensure_aiosmtpd();
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("python3")
            .arg(script())
            .arg("--out")
            .arg(dir.path())
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("SMTP server did not print its port: {line:?}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "SMTP server never accepted");
            std::thread::sleep(Duration::from_millis(20));
        }
        SmtpServer { child, port, dir }
    }

    /// Messages accepted so far, in arrival order.
    pub fn messages(&self) -> Vec<Received> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|json| {
                let env: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
                Received {
                    raw: std::fs::read(json.with_extension("eml")).unwrap(),
                    mail_from: env["mail_from"].as_str().unwrap_or("").to_string(),
                    rcpt_tos: env["rcpt_tos"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap().to_string())
                        .collect(),
                    tls: env["tls"].as_bool().unwrap_or(false),
                }
            })
            .collect()
    }

    pub fn count(&self) -> usize {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .count()
    }

    /// Waits until at least `n` messages arrived (panics after `timeout`).
    pub fn wait_for(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} messages arrived",
                self.count()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

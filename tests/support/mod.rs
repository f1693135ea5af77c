//! Test harness: a real SMTP server (aiosmtpd, in Python) on a free loopback
//! port, with fault modes, writing every message it accepts to a folder; and a
//! scripted server of our own (`scripted_smtp.py`) for what aiosmtpd cannot do.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod app;
pub mod browser;
pub mod cert;
pub mod feed_server;
pub mod pg_cluster;
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

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(name)
}

/// The interpreter `python3` names, resolved once per test run. Where
/// `python3` is a version manager's shim (pyenv's is a shell script that runs
/// several more), each start through it costs more than the interpreter's own
/// start, and the tests start Python some seventy times.
pub fn python() -> &'static Path {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(|| {
        Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("python3"))
    })
}

/// Installs the Python `packages` with pip unless `import` already succeeds
/// (as `scripts/test.sh` does); `tests` names the tests that need them.
/// Each `import` is checked once per test run: a Python start costs a few
/// tenths of a second, and most tests start a server.
pub fn ensure_python(import: &str, packages: &[&str], tests: &str) {
    static READY: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut ready = READY.lock().unwrap_or_else(|e| e.into_inner());
    if ready.iter().any(|i| i == import) {
        return;
    }
    install_python(import, packages, tests);
    ready.push(import.to_string());
}

fn install_python(import: &str, packages: &[&str], tests: &str) {
    let ok = Command::new(python())
        .args(["-c", import])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        let st = Command::new(python())
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
        SmtpServer::spawn("smtp_server.py", flags)
    }

    /// Starts the scripted server (`tests/support/scripted_smtp.py`, standard library
    /// only) with its flags (`--mode starttls`, `--reply MAIL=553 …`, `--no-pipelining`,
    /// `--close-after N`, `--inject-after-starttls LINE`…; see the script's doc).
    pub fn scripted(flags: &[&str]) -> SmtpServer {
        SmtpServer::spawn("scripted_smtp.py", flags)
    }

    fn spawn(name: &str, flags: &[&str]) -> SmtpServer {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(python())
            .arg(script(name))
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
            .unwrap_or_else(|_| panic!("{name} did not print its port: {line:?}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "SMTP server never accepted");
            std::thread::sleep(Duration::from_millis(20));
        }
        SmtpServer { child, port, dir }
    }

    /// The scripted server's session log: one line per command (`C > LINE`), reply
    /// (`C < LINE`) and event (`C ! EVENT`), C numbering the connections from 1.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("session.log")).unwrap_or_default()
    }

    /// The events (`C ! EVENT`) of the scripted server's log, without the connection number.
    pub fn events(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.split_once(" ! ").map(|(_, e)| e.to_string()))
            .collect()
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

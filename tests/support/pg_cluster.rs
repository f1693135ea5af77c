//! A throwaway PostgreSQL cluster for the tests: `initdb` into a temporary
//! folder, `pg_ctl start` on a free loopback port, one database per test.
//! One cluster per test binary, started on first use; a watcher stops it and
//! deletes its folder when the test binary exits. Needs Debian's `postgresql`
//! (scripts/test.sh installs it). Used by the library's store tests (through
//! `#[path]`) and by the end-to-end tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    /// The server's certificate (self-signed, for 127.0.0.1 only),
    /// PEM: what a client trusts to connect over TLS.
    pub ca_file: PathBuf,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// Where `initdb` and `pg_ctl` are: on PATH, else Debian's versioned folder.
fn bin_dir() -> PathBuf {
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v pg_ctl"])
        .output()
    {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !p.is_empty() {
            let p = std::fs::canonicalize(&p).unwrap_or_else(|_| PathBuf::from(p));
            return p.parent().unwrap().to_path_buf();
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("pg_ctl").is_file())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL is not installed: run scripts/test.sh, or apt-get install postgresql")
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL program; as the `postgres` user when we are root
/// (initdb and the server refuse to run as root).
fn pg_command(bin: &Path, program: &str, as_postgres: bool) -> Command {
    let path = bin.join(program);
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start() -> Cluster {
    let bin = bin_dir();
    let root = is_root();
    let dir = std::env::temp_dir().join(format!(
        "digestif-pg-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    if root {
        let st = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(st.success(), "chown postgres {}", dir.display());
    }
    // TLS is on: clients choose (sslmode) whether to use it.
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    if root {
        let st = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&cert)
            .arg(&key)
            .status()
            .unwrap();
        assert!(st.success(), "chown postgres the certificate");
    }
    let data = dir.join("data");
    let out = pg_command(&bin, "initdb", root)
        .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
        .arg("--locale=C")
        .arg("-D")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let opts = format!(
        "-k {} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off \
         -c synchronous_commit=off -c full_page_writes=off -c max_connections=400 \
         -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
        dir.display(),
        cert.display(),
        key.display()
    );
    let out = pg_command(&bin, "pg_ctl", root)
        .args(["start", "-w", "-t", "60", "-D"])
        .arg(&data)
        .arg("-l")
        .arg(dir.join("log"))
        .args(["-o", &opts])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "pg_ctl start failed: {}\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Stops the cluster and deletes its folder once this test binary is gone.
    let stop = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
         {pre}'{ctl}' stop -m immediate -D '{data}' >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        pre = if root { "runuser -u postgres -- " } else { "" },
        ctl = bin.join("pg_ctl").display(),
        data = data.display(),
        dir = dir.display(),
    );
    let watcher = Command::new("sh")
        .args(["-c", &format!("({stop}) &")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(watcher.success(), "cannot start the cluster's watcher");
    Cluster {
        dir,
        bin,
        port,
        ca_file: cert,
    }
}

/// The cluster of this test binary, started on first use.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(start)
}

impl Cluster {
    /// The URL of database `name` in this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// From now on the server refuses connections to database `name` that are
    /// not over TLS (a `hostnossl … reject` line first in pg_hba.conf, reloaded).
    pub fn require_tls_for(&self, name: &str) {
        self.put_first_in_hba(&format!("hostnossl {name} all all reject\n"));
    }

    /// Puts `rules` first in pg_hba.conf and reloads the server. Tests running
    /// at once each add their own rules: one at a time, so none is lost.
    pub fn put_first_in_hba(&self, rules: &str) {
        static HBA: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = HBA.lock().unwrap_or_else(|e| e.into_inner());
        let hba = self.dir.join("data/pg_hba.conf");
        let kept = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(&hba, format!("{rules}{kept}")).unwrap();
        let mut c = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .expect("connect to the test cluster");
        c.batch_execute("SELECT pg_reload_conf()").unwrap();
    }

    /// A new empty database; its URL.
    pub fn fresh_database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst)
        );
        let mut c = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .expect("connect to the test cluster");
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("CREATE DATABASE");
        self.url(&name)
    }
}

/// A new empty database in this binary's cluster; its URL.
pub fn fresh_database() -> String {
    cluster().fresh_database()
}

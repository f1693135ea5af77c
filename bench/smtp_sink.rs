//! An SMTP sink that speaks TLS itself: the relay side of the loopback TLS
//! benchmark without a proxy hop.
//!
//! Postfix's smtp-sink has no TLS, so the TLS benches put stunnel in front of it:
//! one more process, and a thread woken for every write, which a relay that
//! terminates TLS itself (Postfix's smtpd, a provider) does not have. This sink
//! answers the same way in clear and over TLS, so that plain and TLS sends against
//! it differ by the encryption only.
//!
//! One thread, like smtp-sink. It offers PIPELINING and 8BITMIME, accepts every
//! envelope, reads each message to its final `.`, answers 250 and counts it;
//! replies are written when no further pipelined command is waiting, as Postfix
//! does. Every second (and on exit) it appends `mesg=N` to its standard output,
//! the counter `bench/lib.sh` reads from smtp-sink.
//!
//! ```sh
//! smtp_sink --listen 127.0.0.1:0 [--cert relay.pem --key relay.key]
//! ```
//! prints the port it listens on as its first line of stdout; with a certificate
//! it speaks implicit TLS from the first byte.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const USAGE: &str = "usage: smtp_sink --listen ADDR:PORT [--cert PEM --key PEM]
  --listen  where to accept connections (port 0: any free port, printed on stdout)
  --cert    certificate chain (PEM): speak implicit TLS with it
  --key     its private key (PEM)";

struct Args {
    listen: String,
    tls: Option<(String, String)>,
}

fn args() -> Result<Args, String> {
    let mut listen = None;
    let (mut cert, mut key) = (None, None);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => listen = Some(value()?),
            "--cert" => cert = Some(value()?),
            "--key" => key = Some(value()?),
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    let tls = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err("--cert and --key go together".into()),
    };
    Ok(Args {
        listen: listen.ok_or("--listen is required")?,
        tls,
    })
}

fn acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("{cert}: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// One SMTP session; returns when the client quits or goes away.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(stream: S, count: &AtomicU64) {
    let mut io = BufReader::with_capacity(64 * 1024, stream);
    let mut out: Vec<u8> = b"220 digestif-bench-sink ESMTP\r\n".to_vec();
    let mut line = Vec::with_capacity(1024);
    let mut in_data = false;
    loop {
        if io.buffer().is_empty() && !out.is_empty() {
            if io.get_mut().write_all(&out).await.is_err() || io.get_mut().flush().await.is_err() {
                return;
            }
            out.clear();
        }
        line.clear();
        match io.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if in_data {
            if line == b".\r\n" || line == b".\n" {
                in_data = false;
                count.fetch_add(1, Ordering::Relaxed);
                out.extend_from_slice(b"250 2.0.0 Ok: queued\r\n");
            }
            continue;
        }
        let verb = line
            .iter()
            .take(4)
            .map(|b| b.to_ascii_uppercase())
            .collect::<Vec<_>>();
        match verb.as_slice() {
            b"EHLO" => out.extend_from_slice(
                b"250-digestif-bench-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n",
            ),
            b"HELO" => out.extend_from_slice(b"250 digestif-bench-sink\r\n"),
            b"DATA" => {
                in_data = true;
                out.extend_from_slice(b"354 End data with <CR><LF>.<CR><LF>\r\n");
            }
            b"QUIT" => {
                out.extend_from_slice(b"221 2.0.0 Bye\r\n");
                let _ = io.get_mut().write_all(&out).await;
                let _ = io.get_mut().shutdown().await;
                return;
            }
            _ => out.extend_from_slice(b"250 2.0.0 Ok\r\n"),
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let tls = match &args.tls {
        Some((c, k)) => Some(acceptor(c, k)?),
        None => None,
    };
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("{}: {e}", args.listen))?;
    println!(
        "{}",
        listener.local_addr().map_err(|e| e.to_string())?.port()
    );
    let count = Arc::new(AtomicU64::new(0));
    let reporter = count.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            println!("mesg={}", reporter.load(Ordering::Relaxed));
        }
    });
    let total = count.clone();
    let serve = async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let count = count.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => session(tcp, &count).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            session(stream, &count).await
                        }
                    }
                }
            });
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
            term.recv().await
        } => {}
    }
    println!("mesg={}", total.load(Ordering::Relaxed));
    Ok(())
}

fn main() -> ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("smtp_sink: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smtp_sink: {e}");
            ExitCode::FAILURE
        }
    }
}

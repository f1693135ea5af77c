//! A TCP proxy that adds a fixed one-way delay in each direction, for measuring
//! sends at internet round-trip times on a machine whose kernel has no netem.
//!
//! Each chunk read from one side is written to the other side DELAY after it was
//! read; order is kept, there is no bandwidth limit, and any number of connections
//! are served at once. A connection's upstream is opened one round trip (2 × DELAY)
//! after it was accepted, as the TCP handshake over such a path would take. EOF is
//! forwarded (after the delay, like data); a reset on either side closes both.
//!
//! ```sh
//! cargo run --release --example latency_proxy -- --listen 127.0.0.1:0 --to 127.0.0.1:2525 --delay-ms 10
//! ```
//! prints the port it listens on as its first line of stdout, then serves until killed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

const USAGE: &str = "usage: latency_proxy --listen ADDR:PORT --to ADDR:PORT --delay-ms MS
  --listen    where to accept connections (port 0: any free port, printed on stdout)
  --to        where to forward them
  --delay-ms  one-way delay added in each direction, in milliseconds (fractions
              allowed; a round trip costs twice this)";

struct Args {
    listen: SocketAddr,
    to: SocketAddr,
    delay: Duration,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut listen, mut to, mut delay) = (None, None, None);
    while let Some(flag) = argv.next() {
        let mut value = |name: &str| argv.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--listen" => listen = Some(value("--listen")?),
            "--to" => to = Some(value("--to")?),
            "--delay-ms" => delay = Some(value("--delay-ms")?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let addr = |name: &str, v: Option<String>| -> Result<SocketAddr, String> {
        let v = v.ok_or(format!("{name} is required"))?;
        v.parse()
            .map_err(|e| format!("{name} {v}: not an ADDR:PORT ({e})"))
    };
    let delay = delay.ok_or("--delay-ms is required")?;
    let ms: f64 = delay
        .parse()
        .ok()
        .filter(|ms: &f64| ms.is_finite() && *ms >= 0.0)
        .ok_or(format!("--delay-ms {delay}: not a number of milliseconds"))?;
    Ok(Args {
        listen: addr("--listen", listen)?,
        to: addr("--to", to)?,
        delay: Duration::from_secs_f64(ms / 1000.0),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("latency_proxy: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("latency_proxy: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(1);
        }
    };
    println!("{}", listener.local_addr().map(|a| a.port()).unwrap_or(0));
    proxy(listener, args.to, args.delay).await
}

/// Serves every connection `listener` accepts, forever.
async fn proxy(listener: TcpListener, to: SocketAddr, delay: Duration) -> ! {
    let timer = Timer::start();
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                tokio::spawn(serve(client, to, delay, timer.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: say so, keep serving.
                eprintln!("latency_proxy: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Wakes tasks at given instants to within a few microseconds. tokio's timer
/// rounds every deadline up to the next millisecond, which would add about a
/// millisecond to each direction (10 % of a 20 ms round trip); a thread that
/// sleeps on a precise timeout and completes a oneshot does not.
#[derive(Clone)]
struct Timer(std_mpsc::Sender<(Instant, u64, oneshot::Sender<()>)>);

impl Timer {
    fn start() -> Timer {
        let (tx, rx) = std_mpsc::channel::<(Instant, u64, oneshot::Sender<()>)>();
        std::thread::spawn(move || {
            // Earliest first; the sequence number keeps equal instants in order.
            let mut due: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
            let mut wakers = std::collections::HashMap::new();
            loop {
                let next = match due.peek() {
                    Some(Reverse((at, _))) => {
                        rx.recv_timeout(at.saturating_duration_since(Instant::now()))
                    }
                    None => rx
                        .recv()
                        .map_err(|_| std_mpsc::RecvTimeoutError::Disconnected),
                };
                match next {
                    Ok((at, seq, waker)) => {
                        due.push(Reverse((at, seq)));
                        wakers.insert(seq, waker);
                    }
                    Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
                }
                let now = Instant::now();
                while let Some(Reverse((at, seq))) = due.peek().copied() {
                    if at > now {
                        break;
                    }
                    due.pop();
                    if let Some(w) = wakers.remove(&seq) {
                        let _ = w.send(());
                    }
                }
            }
        });
        Timer(tx)
    }

    async fn sleep_until(&self, at: Instant) {
        if at <= Instant::now() {
            return;
        }
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if self.0.send((at, seq, tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// One proxied connection: the upstream opened after a round trip, then one
/// delayed pipe each way.
async fn serve(client: TcpStream, to: SocketAddr, delay: Duration, timer: Timer) {
    timer.sleep_until(Instant::now() + delay * 2).await;
    let upstream = match TcpStream::connect(to).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("latency_proxy: cannot connect to {to}: {e}");
            return;
        }
    };
    for s in [&client, &upstream] {
        let _ = s.set_nodelay(true);
    }
    let (client_r, client_w) = client.into_split();
    let (up_r, up_w) = upstream.into_split();
    let mut up = tokio::spawn(pipe(client_r, up_w, delay, timer.clone()));
    let mut down = tokio::spawn(pipe(up_r, client_w, delay, timer));
    // A pipe that fails (a reset) takes the other one down with it.
    let (clean, other) = tokio::select! {
        r = &mut up => (matches!(r, Ok(true)), down),
        r = &mut down => (matches!(r, Ok(true)), up),
    };
    if clean {
        let _ = other.await;
    } else {
        other.abort();
    }
}

/// What travels from a pipe's reader to its writer: a chunk, or the end of the
/// stream, each with the time it is due on the other side.
enum Item {
    Data(Vec<u8>, Instant),
    Eof(Instant),
}

/// Copies `from` to `to`, each chunk `delay` after it was read. Returns whether
/// the stream ended cleanly (EOF forwarded) rather than with an error.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
    timer: Timer,
) -> bool {
    // Unbounded: a bound would hold back reading and so shift the delay; what is
    // queued is at most DELAY's worth of what the sender writes.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) => {
                    let _ = tx.send(Item::Eof(Instant::now() + delay));
                    return true;
                }
                Ok(n) => {
                    let due = Instant::now() + delay;
                    if tx.send(Item::Data(buf[..n].to_vec(), due)).is_err() {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
    };
    let writer = async move {
        while let Some(item) = rx.recv().await {
            match item {
                Item::Data(bytes, due) => {
                    timer.sleep_until(due).await;
                    if to.write_all(&bytes).await.is_err() {
                        return false;
                    }
                }
                Item::Eof(due) => {
                    timer.sleep_until(due).await;
                    return to.shutdown().await.is_ok();
                }
            }
        }
        false
    };
    let (read_ok, write_ok) = tokio::join!(reader, writer);
    read_ok && write_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free port: every byte read is written back; EOF closes.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        addr
    }

    async fn start(delay_ms: u64) -> SocketAddr {
        let to = echo().await;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(proxy(l, to, Duration::from_millis(delay_ms)));
        addr
    }

    /// Deterministic bytes, different for each connection.
    fn payload(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn many_connections_get_every_byte_back_in_order_and_the_end_of_stream() {
        let proxy = start(3).await;
        let mut clients = vec![];
        for c in 0..24u64 {
            clients.push(tokio::spawn(async move {
                let sent = payload(c, 200_000 + c as usize * 1_000);
                let s = TcpStream::connect(proxy).await.unwrap();
                let (mut r, mut w) = s.into_split();
                let data = sent.clone();
                let writer = tokio::spawn(async move {
                    // Writes of uneven sizes, so chunks are cut anywhere.
                    let mut at = 0;
                    let mut step = 1 + c as usize;
                    while at < data.len() {
                        let end = (at + step).min(data.len());
                        w.write_all(&data[at..end]).await.unwrap();
                        at = end;
                        step = step * 7 % 65_521 + 1;
                    }
                    w.shutdown().await.unwrap();
                });
                let mut got = vec![];
                r.read_to_end(&mut got).await.unwrap();
                writer.await.unwrap();
                assert!(got == sent, "connection {c}: bytes lost or reordered");
            }));
        }
        for c in clients {
            c.await.unwrap();
        }
    }

    #[test]
    fn arguments_are_checked_and_named() {
        let parse = |a: &[&str]| parse_args(a.iter().map(|s| s.to_string()));
        let ok = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:25",
            "--delay-ms",
            "2.5",
        ]);
        assert_eq!(ok.unwrap().delay, Duration::from_micros(2500));
        let e = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--to",
            "nowhere",
            "--delay-ms",
            "1",
        ]);
        assert!(e.err().unwrap().contains("--to nowhere"));
        let e = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:25",
            "--delay-ms",
            "-1",
        ]);
        assert!(e.err().unwrap().contains("--delay-ms -1"));
        let e = parse(&["--to", "127.0.0.1:25", "--delay-ms", "1"]);
        assert!(e.err().unwrap().contains("--listen is required"));
    }
}

//! A feed served over HTTP on a free loopback port, each answer after a delay,
//! counting the requests it gets: how many times digestif fetched it.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct FeedServer {
    pub port: u16,
    fetches: Arc<AtomicUsize>,
}

impl FeedServer {
    /// Serves `body` as an RSS feed at any path, `delay` after each request.
    /// The listener lives as long as the test binary.
    pub fn start(body: &str, delay: Duration) -> FeedServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let fetches = Arc::new(AtomicUsize::new(0));
        let (body, count) = (body.to_string(), fetches.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (body, count) = (body.clone(), count.clone());
                std::thread::spawn(move || {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(delay);
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml; charset=utf-8\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        FeedServer { port, fetches }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/feed.xml", self.port)
    }

    /// Requests answered or being answered so far.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

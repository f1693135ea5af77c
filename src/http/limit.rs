//! Who a request comes from, and how often they may sign up.
//!
//! The client is the TCP peer, unless the peer is one of `[server] trusted_proxies`:
//! then it is the right-most `X-Forwarded-For` address that is not itself a
//! trusted proxy (what a client writes to the left of it is not believed). An
//! IPv6 client is limited per /64, the block one subscriber line usually gets,
//! so that rotating through one's own addresses does not multiply the quota.
//! The limiter forgets every client whose window has passed, so its memory
//! follows the clients of the last minute, not every client ever seen.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;

use axum::http::HeaderMap;
use chrono::{DateTime, Duration, Utc};

/// An address block: an address and how many leading bits count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

/// Why an entry of `[server] trusted_proxies` is not an address block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{given:?} is not an IP address or block such as 10.0.0.0/8")]
    NotAnAddress { given: String },
    #[error("{given:?}: the prefix length must be 0 to {max}")]
    PrefixLength { given: String, max: u8 },
}

impl Cidr {
    /// `10.0.0.0/8`, `fd00::/8`, or one address (`127.0.0.1`, `::1`).
    pub fn parse(s: &str) -> Result<Cidr, CidrError> {
        let s = s.trim();
        let (a, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| CidrError::NotAnAddress {
            given: s.to_string(),
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(|| {
                CidrError::PrefixLength {
                    given: s.to_string(),
                    max,
                }
            })?,
        };
        Ok(Cidr { addr, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, unmap(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.bits as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.bits as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4 address written as IPv6 (`::ffff:1.2.3.4`) is the IPv4 address.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The client of a request that came from `peer` with `headers`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer = unmap(peer);
    if !trusted.iter().any(|c| c.contains(peer)) {
        return peer;
    }
    // Right to left: each trusted proxy appended the address it got the request from.
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(parse_hop)
        .collect();
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        client = hop;
        if !trusted.iter().any(|c| c.contains(hop)) {
            break;
        }
    }
    client
}

/// One X-Forwarded-For entry: an address, possibly with a port or in brackets.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    s.parse::<IpAddr>()
        .or_else(|_| s.parse::<std::net::SocketAddr>().map(|a| a.ip()))
        .or_else(|_| s.trim_matches(['[', ']']).parse::<IpAddr>())
        .ok()
        .map(unmap)
}

/// What a client is counted under: its IPv4 address, or its IPv6 /64.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match unmap(ip) {
        IpAddr::V6(v6) => {
            let masked = u128::from(v6) & (u128::MAX << 64);
            IpAddr::V6(Ipv6Addr::from(masked))
        }
        v4 => v4,
    }
}

/// At most `per_window` requests per key in each window; forgets keys whose
/// window has passed at least once a window.
pub struct Limiter {
    per_window: u32,
    window: Duration,
    state: Mutex<State>,
}

struct State {
    keys: HashMap<IpAddr, (DateTime<Utc>, u32)>,
    pruned_at: Option<DateTime<Utc>>,
}

impl Limiter {
    pub fn new(per_window: u32, window: Duration) -> Limiter {
        Limiter {
            per_window: per_window.max(1),
            window,
            state: Mutex::new(State {
                keys: HashMap::new(),
                pruned_at: None,
            }),
        }
    }

    /// Counts a request of `client` at `now`; false when over the limit.
    pub fn check(&self, client: IpAddr, now: DateTime<Utc>) -> bool {
        let key = limit_key(client);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.pruned_at.is_none_or(|t| now - t >= self.window) {
            let window = self.window;
            st.keys.retain(|_, (start, _)| now - *start < window);
            st.keys.shrink_to_fit();
            st.pruned_at = Some(now);
        }
        let entry = st.keys.entry(key).or_insert((now, 0));
        if now - entry.0 >= self.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= self.per_window
    }

    /// How many clients it remembers.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use chrono::TimeZone;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        h
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 0).unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
        let trusted = vec![
            Cidr::parse("10.0.0.0/8").unwrap(),
            Cidr::parse("::1").unwrap(),
        ];
        // Not a proxy: the header is the client's own words.
        assert_eq!(
            client_ip(ip("203.0.113.9"), &xff("198.51.100.1"), &trusted),
            ip("203.0.113.9")
        );
        // From the proxy: the right-most address the proxy did not add itself.
        assert_eq!(
            client_ip(ip("10.0.0.2"), &xff("6.6.6.6, 198.51.100.1"), &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_ip(ip("::1"), &xff("198.51.100.1, 10.1.2.3"), &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), &xff("[2001:db8::1]:4711"), &trusted),
            ip("2001:db8::1")
        );
        // No header: the proxy itself.
        assert_eq!(
            client_ip(ip("10.0.0.2"), &HeaderMap::new(), &trusted),
            ip("10.0.0.2")
        );
        // Nothing trusted: the header never counts.
        assert_eq!(
            client_ip(ip("127.0.0.1"), &xff("198.51.100.1"), &[]),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn bad_proxy_entries_are_refused_with_the_reason() {
        let e = Cidr::parse("10.0.0.0/33").unwrap_err();
        assert_eq!(
            e,
            CidrError::PrefixLength {
                given: "10.0.0.0/33".into(),
                max: 32
            }
        );
        assert!(e.to_string().contains("0 to 32"));
        assert_eq!(
            Cidr::parse("fd00::/129").unwrap_err(),
            CidrError::PrefixLength {
                given: "fd00::/129".into(),
                max: 128
            }
        );
        let e = Cidr::parse(" proxy.local ").unwrap_err();
        assert_eq!(
            e,
            CidrError::NotAnAddress {
                given: "proxy.local".into()
            }
        );
        assert!(e.to_string().contains("not an IP"));
        assert!(Cidr::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        assert!(!Cidr::parse("fd00::/8").unwrap().contains(ip("fe80::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
    }

    #[test]
    fn ipv6_clients_share_one_quota_per_64() {
        let l = Limiter::new(2, Duration::minutes(1));
        assert!(l.check(ip("2001:db8:1:2::1"), t0()));
        assert!(l.check(ip("2001:db8:1:2:ffff::9"), t0()));
        assert!(!l.check(ip("2001:db8:1:2:dead:beef::1"), t0()));
        // Another /64 has its own.
        assert!(l.check(ip("2001:db8:1:3::1"), t0()));
        // An IPv4-mapped address is the IPv4 client.
        assert!(l.check(ip("192.0.2.1"), t0()));
        assert!(l.check(ip("::ffff:192.0.2.1"), t0()));
        assert!(!l.check(ip("192.0.2.1"), t0()));
        // The window passes: allowed again.
        assert!(l.check(ip("192.0.2.1"), t0() + Duration::seconds(61)));
    }

    #[test]
    fn clients_of_past_windows_are_forgotten() {
        let l = Limiter::new(5, Duration::minutes(1));
        for i in 0..2000u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.check(a, t0());
        }
        assert_eq!(l.len(), 2000);
        l.check(ip("192.0.2.1"), t0() + Duration::minutes(2));
        assert_eq!(l.len(), 1);
    }
}

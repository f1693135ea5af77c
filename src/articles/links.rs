//! Canonical links: one form per article however a feed writes it.

use url::Url;

/// Query parameters that only track readers; removed from canonical URLs.
const TRACKING_PARAMS: &[&str] = &["fbclid", "gclid", "mc_cid", "mc_eid", "igshid", "ref"];

/// The canonical form of a link, or `None` if it is not an absolute http(s) URL:
/// host lowercased, fragment, credentials and tracking parameters (`utm_*`,
/// `fbclid`, `gclid`, `mc_cid`, `mc_eid`, `igshid`, `ref`) removed, the other
/// parameters kept in order.
pub fn canonical_url(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.chars().any(|c| c.is_control()) {
        return None;
    }
    let mut u = Url::parse(raw).ok()?;
    if !matches!(u.scheme(), "http" | "https") {
        return None;
    }
    let host = u.host_str()?.to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    u.set_host(Some(&host)).ok()?;
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_fragment(None);
    if u.query().is_some() {
        let kept: Vec<(String, String)> = u
            .query_pairs()
            .filter(|(k, _)| !is_tracking_param(k))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if kept.is_empty() {
            u.set_query(None);
        } else {
            u.query_pairs_mut().clear().extend_pairs(kept);
        }
    }
    Some(u.to_string())
}

fn is_tracking_param(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.starts_with("utm_") || TRACKING_PARAMS.contains(&k.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_parameters_and_fragment_are_removed_host_lowercased() {
        assert_eq!(
            canonical_url("https://News.Example.COM/a/b?utm_source=x&id=3&fbclid=y&Ref=z#top")
                .as_deref(),
            Some("https://news.example.com/a/b?id=3")
        );
        assert_eq!(
            canonical_url("http://example.com/x?utm_medium=email").as_deref(),
            Some("http://example.com/x")
        );
        assert_eq!(
            canonical_url(" https://user:pw@example.com/ ").as_deref(),
            Some("https://example.com/")
        );
    }

    #[test]
    fn only_absolute_http_links_are_kept() {
        for bad in [
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "data:text/html,<b>x</b>",
            "/relative/path",
            "ftp://example.com/f",
            "mailto:a@b.c",
            "https://exa\nmple.com/",
            "",
        ] {
            assert_eq!(canonical_url(bad), None, "{bad:?}");
        }
    }
}

//! One story however many sources carry it: the same canonical link, or
//! near-identical titles the same day.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::NaiveDate;

use crate::domain::Article;

/// A title reduced for comparison: lowercase, accents folded, punctuation removed,
/// whitespace folded.
pub fn title_fingerprint(title: &str) -> String {
    let mut out = String::with_capacity(title.len());
    for c in title.chars().flat_map(char::to_lowercase) {
        match fold_accent(c) {
            Some(s) => out.push_str(s),
            None if c.is_alphanumeric() => out.push(c),
            None => out.push(' '),
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn fold_accent(c: char) -> Option<&'static str> {
    Some(match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'æ' => "ae",
        'ç' | 'ć' | 'č' => "c",
        'ď' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ę' | 'ě' => "e",
        'ì' | 'í' | 'î' | 'ï' | 'ī' => "i",
        'ñ' | 'ń' | 'ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' => "o",
        'œ' => "oe",
        'ř' => "r",
        'ś' | 'š' | 'ş' => "s",
        'ß' => "ss",
        'ť' | 'ţ' => "t",
        'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' => "u",
        'ý' | 'ÿ' => "y",
        'ź' | 'ż' | 'ž' => "z",
        // Apostrophes join words in French ("l'euro"): treat them as separators.
        _ => return None,
    })
}

/// True when two fingerprinted titles tell the same story: equal, or token sets
/// with a Jaccard similarity of at least 0.8.
pub fn titles_match(a: &str, b: &str) -> bool {
    if a.is_empty() || b.is_empty() {
        return false;
    }
    if a == b {
        return true;
    }
    let ta: BTreeSet<&str> = a.split(' ').collect();
    let tb: BTreeSet<&str> = b.split(' ').collect();
    let inter = ta.intersection(&tb).count();
    let union = ta.union(&tb).count();
    union > 0 && inter * 5 >= union * 4
}

/// Total order of "which copy of a story to keep": highest source weight, then
/// earliest published, then URL (key), then source name.
fn better(a: &Article, b: &Article) -> std::cmp::Ordering {
    b.source_weight
        .total_cmp(&a.source_weight)
        .then(a.published.cmp(&b.published))
        .then_with(|| a.key().cmp(&b.key()))
        .then_with(|| a.source.cmp(&b.source))
        .then_with(|| a.title.cmp(&b.title))
        .then_with(|| a.summary.cmp(&b.summary))
}

struct Cluster<T> {
    kept: Article,
    urls: BTreeSet<String>,
    /// (title tokens, calendar day) of every member.
    titles: Vec<(T, NaiveDate)>,
}

/// [`titles_match`] on token-id sets (sorted, distinct): same verdict, no allocation.
fn token_sets_match(a: &[u32], b: &[u32]) -> bool {
    if a.is_empty() || b.is_empty() {
        return false;
    }
    let (small, big) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    // inter ≤ |small| and union ≥ |big|: cannot reach 0.8 if the sizes differ too much.
    if small.len() * 5 < big.len() * 4 {
        return false;
    }
    let (mut i, mut j, mut inter) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - inter;
    inter * 5 >= union * 4
}

/// Folds duplicates: the same canonical URL, or near-identical titles published
/// the same (UTC) calendar day. Keeps the best source (highest weight, then
/// earliest, then URL), records the others in `also_in`. Returns the kept articles
/// and, for each dropped one, the URL (or key) of the story it duplicates.
/// The result does not depend on the order of the input.
pub fn dedupe(mut articles: Vec<Article>) -> (Vec<Article>, Vec<(Article, String)>) {
    articles.sort_by(better);
    let fingerprints: Vec<String> = articles
        .iter()
        .map(|a| title_fingerprint(&a.title))
        .collect();
    let token_sets = title_token_sets(&fingerprints);
    let mut clusters: Vec<Cluster<Vec<u32>>> = Vec::new();
    let mut by_url: BTreeMap<String, usize> = BTreeMap::new();
    // (day, token) → clusters with a member title of that day whose prefix holds the token.
    let mut by_token: HashMap<(NaiveDate, u32), Vec<usize>> = HashMap::new();
    let mut dups: Vec<(Article, String)> = Vec::new();
    let mut candidates: Vec<usize> = Vec::new();
    for (a, tokens) in articles.into_iter().zip(token_sets) {
        let day = a.published.date_naive();
        let n: usize = tokens.len();
        let prefix_len = n - (4 * n).div_ceil(5) + usize::from(n > 0);
        let found = a
            .url
            .as_ref()
            .and_then(|u| by_url.get(u).copied())
            .or_else(|| {
                // Only clusters sharing a prefix token on that day can match; check
                // them in cluster order so the first match is the one a scan finds.
                candidates.clear();
                for t in &tokens[..prefix_len] {
                    if let Some(cs) = by_token.get(&(day, *t)) {
                        candidates.extend_from_slice(cs);
                    }
                }
                candidates.sort_unstable();
                candidates.dedup();
                candidates.iter().copied().find(|&ci| {
                    clusters[ci]
                        .titles
                        .iter()
                        .any(|(t, d)| *d == day && token_sets_match(t, &tokens))
                })
            });
        let prefix = tokens[..prefix_len].to_vec();
        let ci = match found {
            Some(ci) => {
                let c = &mut clusters[ci];
                if a.source != c.kept.source && !c.kept.also_in.contains(&a.source) {
                    c.kept.also_in.push(a.source.clone());
                }
                if let Some(u) = &a.url {
                    c.urls.insert(u.clone());
                    by_url.insert(u.clone(), ci);
                }
                c.titles.push((tokens, day));
                dups.push((a, c.kept.key()));
                ci
            }
            None => {
                let ci = clusters.len();
                let mut urls = BTreeSet::new();
                if let Some(u) = &a.url {
                    urls.insert(u.clone());
                    by_url.insert(u.clone(), ci);
                }
                clusters.push(Cluster {
                    kept: a,
                    urls,
                    titles: vec![(tokens, day)],
                });
                ci
            }
        };
        for t in prefix {
            let cs = by_token.entry((day, t)).or_default();
            if cs.last() != Some(&ci) {
                cs.push(ci);
            }
        }
    }
    let kept = clusters
        .into_iter()
        .map(|mut c| {
            c.kept.also_in.sort();
            c.kept
        })
        .collect();
    (kept, dups)
}

/// The distinct tokens of each fingerprint as ids in a fixed order, rarest first
/// (prefix filtering): a title of n tokens is indexed under its first
/// n − ⌈4n/5⌉ + 1. Two titles that match (Jaccard ≥ 0.8, see [`titles_match`])
/// share at least ⌈4n/5⌉ tokens, so the first shared token in that order lies in
/// both prefixes: only clusters indexed under a token of the prefix can match.
fn title_token_sets(fingerprints: &[String]) -> Vec<Vec<u32>> {
    let sets: Vec<BTreeSet<&str>> = fingerprints
        .iter()
        .map(|f| f.split(' ').filter(|t| !t.is_empty()).collect())
        .collect();
    let mut freq: HashMap<&str, usize> = HashMap::new();
    for s in &sets {
        for t in s {
            *freq.entry(t).or_default() += 1;
        }
    }
    let mut order: Vec<(&str, usize)> = freq.into_iter().collect();
    order.sort_unstable_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(b.0)));
    let rank: HashMap<&str, u32> = order
        .iter()
        .enumerate()
        .map(|(i, (t, _))| (*t, i as u32))
        .collect();
    sets.iter()
        .map(|s| {
            let mut ids: Vec<u32> = s.iter().map(|t| rank[t]).collect();
            ids.sort_unstable();
            ids
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeZone, Utc};

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, h, m, 0).unwrap()
    }

    fn art(title: &str, url: Option<&str>, source: &str, weight: f64, h: u32) -> Article {
        Article {
            title: title.into(),
            url: url.map(String::from),
            source: source.into(),
            category: "Monde".into(),
            published: at(h, 0),
            summary: String::new(),
            reading_minutes: 1,
            source_weight: weight,
            also_in: vec![],
        }
    }

    #[test]
    fn fingerprint_folds_case_accents_and_punctuation() {
        assert_eq!(
            title_fingerprint("Budget 2027 : l'Élysée défend ses « recettes » !"),
            "budget 2027 l elysee defend ses recettes"
        );
    }

    #[test]
    fn near_identical_titles_match_different_ones_do_not() {
        let a =
            title_fingerprint("Le Parlement adopte la réforme des retraites en première lecture");
        let b =
            title_fingerprint("Le Parlement adopte la réforme des retraites en première lecture !");
        let c = title_fingerprint("Le Parlement rejette la réforme du chômage");
        assert!(titles_match(&a, &b));
        assert!(!titles_match(&a, &c));
    }

    #[test]
    fn same_canonical_url_is_one_story_kept_from_the_heaviest_source() {
        let a = art("Titre A", Some("https://x.fr/1"), "Light", 1.0, 6);
        let b = art("Autre titre", Some("https://x.fr/1"), "Heavy", 2.0, 9);
        let (kept, dups) = dedupe(vec![a, b]);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].source, "Heavy");
        assert_eq!(kept[0].also_in, vec!["Light".to_string()]);
        assert_eq!(dups.len(), 1);
        assert_eq!(dups[0].0.source, "Light");
        assert_eq!(dups[0].1, "https://x.fr/1");
    }

    #[test]
    fn near_identical_titles_the_same_day_are_one_story_earliest_wins_on_equal_weight() {
        let a = art(
            "Le gel frappe les vignobles du Bordelais",
            Some("https://a.fr/1"),
            "A",
            1.0,
            10,
        );
        let b = art(
            "Le gel frappe les vignobles du Bordelais.",
            Some("https://b.fr/2"),
            "B",
            1.0,
            7,
        );
        let (kept, dups) = dedupe(vec![a.clone(), b.clone()]);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].source, "B");
        assert_eq!(dups[0].1, "https://b.fr/2");
        // Another day: two stories.
        let mut later = a;
        later.published = Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap();
        let (kept, _) = dedupe(vec![later, b]);
        assert_eq!(kept.len(), 2);
    }

    #[test]
    fn dedupe_does_not_depend_on_input_order() {
        let v = vec![
            art("Un", Some("https://x.fr/1"), "A", 1.0, 6),
            art("Un", Some("https://x.fr/1?utm_source=z"), "B", 1.0, 6),
            art("Deux histoires", Some("https://x.fr/2"), "C", 1.5, 7),
            art("Deux histoires", None, "D", 1.5, 7),
        ];
        let mut r = v.clone();
        r.reverse();
        assert_eq!(dedupe(v), dedupe(r));
    }

    /// The scan over every cluster that the token index replaces.
    fn dedupe_by_scan(mut articles: Vec<Article>) -> (Vec<Article>, Vec<(Article, String)>) {
        articles.sort_by(better);
        let mut clusters: Vec<Cluster<String>> = Vec::new();
        let mut by_url: BTreeMap<String, usize> = BTreeMap::new();
        let mut dups = Vec::new();
        for a in articles {
            let fp = title_fingerprint(&a.title);
            let day = a.published.date_naive();
            let found = a
                .url
                .as_ref()
                .and_then(|u| by_url.get(u).copied())
                .or_else(|| {
                    clusters.iter().position(|c| {
                        c.titles
                            .iter()
                            .any(|(t, d)| *d == day && titles_match(t, &fp))
                    })
                });
            match found {
                Some(ci) => {
                    let c = &mut clusters[ci];
                    if a.source != c.kept.source && !c.kept.also_in.contains(&a.source) {
                        c.kept.also_in.push(a.source.clone());
                    }
                    if let Some(u) = &a.url {
                        by_url.insert(u.clone(), ci);
                    }
                    c.titles.push((fp, day));
                    dups.push((a, c.kept.key()));
                }
                None => {
                    if let Some(u) = &a.url {
                        by_url.insert(u.clone(), clusters.len());
                    }
                    clusters.push(Cluster {
                        kept: a,
                        urls: BTreeSet::new(),
                        titles: vec![(fp, day)],
                    });
                }
            }
        }
        let kept = clusters
            .into_iter()
            .map(|mut c| {
                c.kept.also_in.sort();
                c.kept
            })
            .collect();
        (kept, dups)
    }

    #[test]
    fn the_token_index_finds_the_same_duplicates_as_a_scan_of_every_cluster() {
        // Titles from a tiny vocabulary, so that many are near-identical (Jaccard
        // around 0.8) and many share URLs or days: a pseudo-random but fixed mix.
        let words = [
            "budget", "euro", "vote", "loi", "pluie", "match", "prix", "élu", "état",
        ];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut v = Vec::new();
        for i in 0..600 {
            let len = 1 + next(7) as usize;
            let title: Vec<&str> = (0..len).map(|_| words[next(9) as usize]).collect();
            let url = match next(4) {
                0 => None,
                1 => Some(format!("https://x.fr/{}", next(40))),
                _ => Some(format!("https://x.fr/u{i}")),
            };
            let source = ["A", "B", "C", "D"][next(4) as usize];
            let mut a = art(
                &title.join(" "),
                url.as_deref(),
                source,
                1.0 + next(3) as f64,
                6,
            );
            a.published =
                at(next(24) as u32, next(60) as u32) + chrono::Duration::days(next(2) as i64);
            v.push(a);
        }
        let (kept, dups) = dedupe(v.clone());
        assert!(dups.len() > 100, "the fixture must exercise folding");
        assert_eq!((kept, dups), dedupe_by_scan(v));
    }
}

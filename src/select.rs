//! Pure selection: window, editor picks, already-sent stories, score, diversity,
//! the reading budget and `max_articles`. Same inputs, same digest; ties broken by URL.
//!
//! The budget is counted on the words a reader actually reads in the digest: a
//! fixed allowance for the header and footer, the editor's intro, and for each
//! story its category, title, summary and the "Temps de lecture : N min" line.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};

use crate::articles::canonical_url;
use crate::config::Ranking;
use crate::domain::{minutes_for, word_count, Article, Candidate, Reason, Story};
use crate::editor::EditorPicks;

/// Words allowed for the digest's header and footer (name, date, "≈ N min de
/// lecture", unsubscribe line…).
pub const OVERHEAD_WORDS: usize = 30;
/// Words of a story's reading-time line ("Temps de lecture : 3 min").
pub const READING_LINE_WORDS: usize = 5;

/// Everything the selection depends on besides the pool.
#[derive(Debug, Clone)]
pub struct SelectParams<'a> {
    pub date: NaiveDate,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    /// Items dated after `now` are ignored.
    pub now: DateTime<Utc>,
    pub budget_minutes: u32,
    pub words_per_minute: u32,
    pub max_articles: usize,
    pub ranking: &'a Ranking,
    pub editor: &'a EditorPicks,
    /// Canonical URL → date of the earlier issue that carried it.
    pub already_sent: &'a BTreeMap<String, NaiveDate>,
}

/// The selection's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub stories: Vec<Story>,
    /// Every article of the pool (duplicates included) with its verdict, best first.
    pub candidates: Vec<Candidate>,
    /// Estimated minutes to read the digest text (intro + stories).
    pub reading_minutes: u32,
}

/// Words one story adds to the digest.
pub fn story_words(a: &Article) -> usize {
    word_count(&a.category) + word_count(&a.title) + word_count(&a.summary) + READING_LINE_WORDS
}

/// Words of a whole digest: overhead, intro, stories.
pub fn digest_words<'a>(
    intro: Option<&str>,
    stories: impl IntoIterator<Item = &'a Article>,
) -> usize {
    OVERHEAD_WORDS
        + intro.map(word_count).unwrap_or(0)
        + stories.into_iter().map(story_words).sum::<usize>()
}

/// Base score of an article: recency (halving every `recency_half_life_hours`
/// before the end of the window, or `now` if earlier) × `recency_weight`,
/// plus source weight × `source_weight`, plus `coverage_bonus` per other source.
/// Rounded to 4 decimals so that it reads well and compares stably.
pub fn score(a: &Article, r: &Ranking, reference: DateTime<Utc>) -> f64 {
    let age_h = (reference - a.published).num_seconds().max(0) as f64 / 3600.0;
    let recency = if r.recency_half_life_hours > 0.0 && r.recency_half_life_hours.is_finite() {
        0.5f64.powf(age_h / r.recency_half_life_hours)
    } else {
        1.0
    };
    let s = recency * r.recency_weight
        + a.source_weight * r.source_weight
        + r.coverage_bonus * a.also_in.len() as f64;
    if s.is_finite() {
        (s * 10_000.0).round() / 10_000.0
    } else {
        0.0
    }
}

/// Higher score first, then key (URL) ascending: a total, deterministic order.
fn by_score(a: (f64, &str), b: (f64, &str)) -> Ordering {
    b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1))
}

/// Picks the day's stories.
///
/// Pinned stories: a pinned URL (or the URL of one of its duplicates) that is in
/// the pool is included first, in pin order, even if it falls outside the window
/// or was already sent; it is still refused if excluded by the editor, dated after
/// `now`, or if it alone would break the reading budget or `max_articles`.
/// A pin that matches nothing in the pool is ignored.
///
/// Articles without an http(s) link are never picked (reason `NoLink`): the
/// digest links every story and remembers sent stories by URL.
pub fn select(
    pool: Vec<Article>,
    duplicates: Vec<(Article, String)>,
    p: &SelectParams<'_>,
) -> Selection {
    let reference = p.now.min(p.window_end);
    let canon = |u: &String| canonical_url(u).unwrap_or_else(|| u.trim().to_string());

    // A URL of a duplicate stands for the story it was folded into.
    let mut alias: BTreeMap<String, String> = BTreeMap::new();
    for (d, of) in &duplicates {
        if let Some(u) = &d.url {
            alias.insert(u.clone(), of.clone());
        }
    }
    let resolve = |u: String| alias.get(&u).cloned().unwrap_or(u);
    let mut pins: Vec<String> = Vec::new();
    for u in p.editor.pin.iter().map(canon).map(resolve) {
        if !pins.contains(&u) {
            pins.push(u);
        }
    }
    let excluded: BTreeSet<String> = p.editor.exclude.iter().map(canon).map(resolve).collect();
    let mut sent: BTreeMap<String, NaiveDate> = BTreeMap::new();
    for (u, d) in p.already_sent {
        let k = resolve(u.clone());
        let e = sent.entry(k).or_insert(*d);
        *e = (*e).max(*d);
    }

    let mut verdicts: Vec<(Article, f64, Option<Reason>)> = Vec::new();
    let mut pinned_idx: Vec<(usize, usize)> = Vec::new(); // (pin order, index)
    let mut open: Vec<usize> = Vec::new();
    for a in pool {
        let s = score(&a, p.ranking, reference);
        let key = a.key();
        let pin_pos = pins.iter().position(|u| *u == key);
        let in_window = a.published >= p.window_start && a.published < p.window_end;
        let reason = if a.url.is_none() {
            Some(Reason::NoLink)
        } else if excluded.contains(&key) {
            Some(Reason::Excluded)
        } else if a.published > p.now {
            Some(Reason::InFuture)
        } else if pin_pos.is_some() {
            None
        } else if !in_window {
            Some(Reason::OutsideWindow)
        } else {
            sent.get(&key).map(|d| Reason::AlreadySent { date: *d })
        };
        let i = verdicts.len();
        if reason.is_none() {
            match pin_pos {
                Some(pos) => pinned_idx.push((pos, i)),
                None => open.push(i),
            }
        }
        verdicts.push((a, s, reason));
    }
    pinned_idx.sort();

    let limit = (p.budget_minutes as usize).saturating_mul(p.words_per_minute as usize);
    let intro = p.editor.intro.as_deref().filter(|s| !s.trim().is_empty());
    let mut words = digest_words(intro, std::iter::empty());
    let mut picked: Vec<(usize, bool)> = Vec::new();
    let mut per_category: BTreeMap<String, usize> = BTreeMap::new();

    // Tries to add verdict `i`; records why not otherwise.
    let mut take = |i: usize,
                    pinned: bool,
                    verdicts: &mut Vec<(Article, f64, Option<Reason>)>,
                    picked: &mut Vec<(usize, bool)>,
                    per_category: &mut BTreeMap<String, usize>| {
        let w = story_words(&verdicts[i].0);
        if picked.len() >= p.max_articles {
            verdicts[i].2 = Some(Reason::OverMaxArticles);
        } else if words + w > limit {
            verdicts[i].2 = Some(Reason::OverBudget);
        } else {
            words += w;
            *per_category
                .entry(verdicts[i].0.category.clone())
                .or_default() += 1;
            picked.push((i, pinned));
        }
    };

    for &(_, i) in &pinned_idx {
        take(i, true, &mut verdicts, &mut picked, &mut per_category);
    }

    let cap = p.ranking.max_per_category;
    let penalty = p.ranking.category_penalty;
    while !open.is_empty() {
        let count = |i: &usize| {
            per_category
                .get(&verdicts[*i].0.category)
                .copied()
                .unwrap_or(0)
        };
        let some_open = open.iter().any(|i| count(i) < cap);
        let best = open
            .iter()
            .enumerate()
            .filter(|(_, i)| !some_open || count(i) < cap)
            .map(|(pos, i)| {
                let adjusted = verdicts[*i].1 * penalty.powi(count(i) as i32);
                (pos, adjusted, verdicts[*i].0.key())
            })
            .min_by(|a, b| by_score((a.1, &a.2), (b.1, &b.2)))
            .map(|(pos, _, _)| pos)
            .expect("open is not empty");
        let i = open.remove(best);
        take(i, false, &mut verdicts, &mut picked, &mut per_category);
    }

    let total_words = digest_words(intro, picked.iter().map(|(i, _)| &verdicts[*i].0));
    let stories: Vec<Story> = picked
        .iter()
        .map(|&(i, pinned)| Story {
            article: verdicts[i].0.clone(),
            score: verdicts[i].1,
            pinned,
        })
        .collect();

    let picked_set: BTreeSet<usize> = picked.iter().map(|(i, _)| *i).collect();
    let mut candidates: Vec<Candidate> = picked
        .iter()
        .map(|&(i, _)| Candidate {
            article: verdicts[i].0.clone(),
            score: verdicts[i].1,
            picked: true,
            reason: None,
        })
        .collect();
    let mut rest: Vec<Candidate> = verdicts
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !picked_set.contains(i))
        .map(|(_, (article, score, reason))| Candidate {
            article,
            score,
            picked: false,
            reason,
        })
        .chain(duplicates.into_iter().map(|(article, of)| Candidate {
            score: score(&article, p.ranking, reference),
            article,
            picked: false,
            reason: Some(Reason::DuplicateOf { url: of }),
        }))
        .collect();
    rest.sort_by(|a, b| {
        by_score((a.score, &a.article.key()), (b.score, &b.article.key()))
            .then_with(|| a.article.source.cmp(&b.article.source))
    });
    candidates.extend(rest);

    Selection {
        stories,
        candidates,
        reading_minutes: minutes_for(total_words, p.words_per_minute),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use proptest::prelude::*;

    fn t(h: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 6, 0, 0).unwrap() + Duration::hours(h)
    }

    fn art(n: usize, cat: &str, h: i64, weight: f64) -> Article {
        Article {
            title: format!("Titre numéro {n}"),
            url: Some(format!("https://news.example.com/{n:03}")),
            source: "Monde".into(),
            category: cat.into(),
            published: t(h),
            summary: "Un résumé de quelques mots.".into(),
            reading_minutes: 2,
            source_weight: weight,
            also_in: vec![],
        }
    }

    struct Fixture {
        ranking: Ranking,
        editor: EditorPicks,
        sent: BTreeMap<String, NaiveDate>,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                ranking: Ranking::default(),
                editor: EditorPicks::default(),
                sent: BTreeMap::new(),
            }
        }
        fn params(&self) -> SelectParams<'_> {
            SelectParams {
                date: NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(),
                window_start: t(0),
                window_end: t(24),
                now: t(24),
                budget_minutes: 5,
                words_per_minute: 230,
                max_articles: 10,
                ranking: &self.ranking,
                editor: &self.editor,
                already_sent: &self.sent,
            }
        }
    }

    fn reason_of(s: &Selection, url: &str) -> Option<Reason> {
        s.candidates
            .iter()
            .find(|c| c.article.url.as_deref() == Some(url))
            .and_then(|c| c.reason.clone())
    }

    #[test]
    fn items_outside_the_window_in_the_future_excluded_or_already_sent_are_dropped_with_a_reason() {
        let mut f = Fixture::new();
        f.editor.exclude = vec!["https://NEWS.example.com/003?utm_source=x#frag".into()];
        f.sent.insert(
            "https://news.example.com/004".into(),
            NaiveDate::from_ymd_opt(2026, 11, 26).unwrap(),
        );
        let mut p = f.params();
        p.now = t(20);
        let mut no_link = art(6, "Monde", 5, 1.0);
        no_link.url = None;
        let pool = vec![
            art(1, "Monde", -2, 1.0),
            art(2, "Monde", 22, 1.0),
            art(3, "Monde", 5, 1.0),
            art(4, "Monde", 5, 1.0),
            art(5, "Monde", 5, 1.0),
            no_link,
        ];
        let s = select(pool, vec![], &p);
        let u = |n: usize| format!("https://news.example.com/{n:03}");
        assert_eq!(reason_of(&s, &u(1)), Some(Reason::OutsideWindow));
        assert_eq!(reason_of(&s, &u(2)), Some(Reason::InFuture));
        assert_eq!(reason_of(&s, &u(3)), Some(Reason::Excluded));
        assert_eq!(
            reason_of(&s, &u(4)),
            Some(Reason::AlreadySent {
                date: NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
            })
        );
        let no_link = s
            .candidates
            .iter()
            .find(|c| c.article.url.is_none())
            .unwrap();
        assert_eq!(no_link.reason, Some(Reason::NoLink));
        assert_eq!(s.stories.len(), 1);
        assert_eq!(s.stories[0].article.url.as_deref(), Some(u(5).as_str()));
        assert_eq!(s.candidates.len(), 6);
        assert!(s.candidates[0].picked);
    }

    #[test]
    fn pinned_stories_come_first_in_pin_order_even_outside_the_window_or_already_sent() {
        let mut f = Fixture::new();
        f.editor.pin = vec![
            "https://news.example.com/002".into(),
            "https://news.example.com/001".into(),
            "https://news.example.com/404".into(),
        ];
        f.sent.insert(
            "https://news.example.com/002".into(),
            NaiveDate::from_ymd_opt(2026, 11, 25).unwrap(),
        );
        let pool = vec![
            art(1, "Monde", -30, 0.1),
            art(2, "Culture", 3, 0.1),
            art(3, "Sport", 23, 3.0),
        ];
        let s = select(pool, vec![], &f.params());
        let urls: Vec<&str> = s
            .stories
            .iter()
            .map(|s| s.article.url.as_deref().unwrap())
            .collect();
        assert_eq!(
            urls,
            [
                "https://news.example.com/002",
                "https://news.example.com/001",
                "https://news.example.com/003"
            ]
        );
        assert!(s.stories[0].pinned && s.stories[1].pinned && !s.stories[2].pinned);
    }

    #[test]
    fn a_pin_on_a_duplicate_url_pins_the_story_it_was_folded_into() {
        let mut f = Fixture::new();
        f.editor.pin = vec!["https://other.example.com/copy".into()];
        let kept = art(1, "Monde", 2, 0.1);
        let mut dup = art(9, "Monde", 2, 0.1);
        dup.url = Some("https://other.example.com/copy".into());
        let s = select(
            vec![art(2, "Monde", 23, 3.0), kept.clone()],
            vec![(dup, kept.key())],
            &f.params(),
        );
        assert!(s.stories[0].pinned);
        assert_eq!(s.stories[0].article.key(), kept.key());
        let d = s.candidates.last().unwrap();
        assert_eq!(d.reason, Some(Reason::DuplicateOf { url: kept.key() }));
    }

    #[test]
    fn the_top_is_not_one_category_when_others_exist() {
        let f = Fixture::new();
        let mut pool: Vec<Article> = (0..6).map(|n| art(n, "Monde", 23, 2.0)).collect();
        pool.push(art(10, "Culture", 10, 1.0));
        pool.push(art(11, "Sport", 10, 1.0));
        let s = select(pool, vec![], &f.params());
        let cats: Vec<&str> = s
            .stories
            .iter()
            .map(|s| s.article.category.as_str())
            .collect();
        assert_eq!(s.stories.len(), 8);
        assert!(cats[..4].contains(&"Culture"), "{cats:?}");
        // At most three Monde before the other categories are used up.
        let first_other = cats.iter().rposition(|c| *c != "Monde").unwrap();
        assert!(
            cats[..first_other]
                .iter()
                .filter(|c| **c == "Monde")
                .count()
                <= 3,
            "{cats:?}"
        );
    }

    #[test]
    fn a_story_over_the_budget_is_skipped_and_a_smaller_one_still_fits() {
        let f = Fixture::new();
        let mut p = f.params();
        p.budget_minutes = 1;
        p.words_per_minute = 100; // 100 words, 30 for the frame
        let mut big = art(1, "Monde", 23, 3.0);
        big.summary = "mot ".repeat(70);
        let small = art(2, "Monde", 20, 1.0);
        let s = select(vec![big, small], vec![], &p);
        assert_eq!(s.stories.len(), 1);
        assert_eq!(
            s.stories[0].article.url.as_deref(),
            Some("https://news.example.com/002")
        );
        assert_eq!(
            reason_of(&s, "https://news.example.com/001"),
            Some(Reason::OverBudget)
        );
        assert_eq!(s.reading_minutes, 1);
    }

    #[test]
    fn max_articles_is_a_hard_cap() {
        let f = Fixture::new();
        let mut p = f.params();
        p.max_articles = 2;
        let pool: Vec<Article> = (0..5).map(|n| art(n, "Monde", n as i64, 1.0)).collect();
        let s = select(pool, vec![], &p);
        assert_eq!(s.stories.len(), 2);
        assert_eq!(
            s.candidates
                .iter()
                .filter(|c| c.reason == Some(Reason::OverMaxArticles))
                .count(),
            3
        );
    }

    #[test]
    fn recency_halves_every_half_life_and_coverage_adds_a_bonus() {
        let r = Ranking {
            recency_half_life_hours: 12.0,
            recency_weight: 1.0,
            source_weight: 0.0,
            coverage_bonus: 0.25,
            ..Ranking::default()
        };
        let mut a = art(1, "Monde", 12, 1.0);
        assert_eq!(score(&a, &r, t(24)), 0.5);
        a.also_in = vec!["Éco".into(), "Culture".into()];
        assert_eq!(score(&a, &r, t(24)), 1.0);
    }

    fn arb_article() -> impl Strategy<Value = Article> {
        (
            0usize..60,
            1usize..25,
            0usize..80,
            prop::sample::select(vec!["Monde", "Économie", "Culture", "Sport"]),
            -10i64..30,
            0.0f64..3.0,
            0usize..3,
        )
            .prop_map(|(n, tw, sw, cat, h, w, cov)| Article {
                title: vec!["titre"; tw].join(" "),
                url: Some(format!("https://news.example.com/{n}")),
                source: format!("S{}", n % 3),
                category: cat.to_string(),
                published: t(h),
                summary: vec!["mot"; sw].join(" "),
                reading_minutes: 1,
                source_weight: w,
                also_in: (0..cov).map(|i| format!("X{i}")).collect(),
            })
    }

    proptest! {
        #[test]
        fn budget_and_max_articles_always_hold_and_the_result_is_deterministic(
            pool in prop::collection::vec(arb_article(), 0..40)
                .prop_map(articles_unique)
                .prop_shuffle(),
            budget in 1u32..6,
            wpm in 40u32..300,
            max in 1usize..12,
            intro_words in 0usize..40,
        ) {
            let mut f = Fixture::new();
            if intro_words > 0 {
                f.editor.intro = Some(vec!["bonjour"; intro_words].join(" "));
            }
            let mut p = f.params();
            p.budget_minutes = budget;
            p.words_per_minute = wpm;
            p.max_articles = max;
            let s = select(pool.clone(), vec![], &p);
            prop_assert!(s.stories.len() <= max);
            if !s.stories.is_empty() {
                let words = digest_words(
                    f.editor.intro.as_deref(),
                    s.stories.iter().map(|s| &s.article),
                );
                prop_assert!(words <= (budget * wpm) as usize, "{} words > {}", words, budget * wpm);
                prop_assert!(s.reading_minutes <= budget);
            }
            prop_assert_eq!(s.candidates.len(), pool.len());
            let mut reversed = pool.clone();
            reversed.reverse();
            let again = select(reversed, vec![], &p);
            prop_assert_eq!(&again.stories, &s.stories);
            prop_assert_eq!(&again.candidates, &s.candidates);
        }
    }

    /// The pool after dedupe holds one article per URL.
    fn articles_unique(v: Vec<Article>) -> Vec<Article> {
        let mut seen = BTreeSet::new();
        v.into_iter()
            .filter(|a| seen.insert(a.url.clone()))
            .collect()
    }
}

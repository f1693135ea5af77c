//! End to end: the binary turns feeds into an archived issue, previews it,
//! lists its candidates, and refuses bad input with a clear message.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Output;

use support::site::{digestif_at, stderr, stdout};

const NOW: &str = "2026-11-27T06:00:00Z";
const DATE: &str = "2026-11-27";

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    /// A temp folder with `digestif.toml` listing `feeds` (file name, category, body).
    fn new(feeds: &[(&str, &str, String)]) -> Site {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("feeds")).unwrap();
        let mut cfg = String::from(
            r#"[newsletter]
name = "L'Essentiel"
tagline = "La newsletter qui vous briefe en 5 min"
locale = "fr"
timezone = "Europe/Paris"
base_url = "https://news.example.com/digestif"
send_time = "07:00"
window_hours = 24
reading_budget_minutes = 5
words_per_minute = 230
max_articles = 10

[smtp]
transport = "file"
"#,
        );
        for (name, cat, body) in feeds {
            std::fs::write(dir.path().join("feeds").join(name), body).unwrap();
            cfg.push_str(&format!(
                "\n[[sources]]\nname = \"{cat}\"\npath = \"feeds/{name}\"\ncategory = \"{cat}\"\n"
            ));
        }
        std::fs::write(dir.path().join("digestif.toml"), cfg).unwrap();
        Site { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self, args: &[&str]) -> Output {
        digestif_at(&self.path().join("digestif.toml"), args)
            .output()
            .unwrap()
    }

    /// `articles --json` for DATE: one JSON object a candidate.
    fn candidates(&self) -> Vec<serde_json::Value> {
        let o = self.run(&["articles", "--date", DATE, "--now", NOW, "--json"]);
        assert!(o.status.success(), "stderr: {}", stderr(&o));
        stdout(&o)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn issue(&self, date: &str) -> PathBuf {
        self.path().join("digests").join(date)
    }
}

/// An RSS 2.0 feed of `(title, link, pubDate RFC 2822, description)`.
fn rss(items: &[(&str, &str, &str, &str)]) -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\"><channel><title>T</title><link>https://news.example.com/</link><description>d</description>\n",
    );
    for (t, l, d, desc) in items {
        s.push_str(&format!(
            "<item><title>{t}</title><link>{l}</link><pubDate>{d}</pubDate><description>{desc}</description></item>\n"
        ));
    }
    s.push_str("</channel></rss>\n");
    s
}

fn world() -> String {
    rss(&[
        (
            "Sommet à Bruxelles sur le budget européen",
            "https://news.example.com/monde/sommet-bruxelles?utm_source=rss",
            "Thu, 26 Nov 2026 18:00:00 +0000",
            "Les Vingt-Sept se retrouvent pour un accord sur le budget pluriannuel.",
        ),
        (
            "Élections au Chili : le second tour s'annonce serré",
            "https://news.example.com/monde/chili",
            "Fri, 27 Nov 2026 04:00:00 +0000",
            "Les deux candidats sont au coude-à-coude selon les derniers sondages.",
        ),
        (
            "Une vieille nouvelle",
            "https://news.example.com/monde/vieille",
            "Mon, 23 Nov 2026 08:00:00 +0000",
            "Trop ancienne pour l'issue.",
        ),
    ])
}

fn economy() -> String {
    rss(&[
        (
            "Le prix du blé recule",
            "https://news.example.com/eco/ble-prix",
            "Thu, 26 Nov 2026 20:00:00 +0000",
            "Les cours mondiaux baissent après une récolte record en Argentine.",
        ),
        (
            "Budget 2027 : les recettes revues à la hausse",
            "https://news.example.com/eco/budget-2027-recettes",
            "Thu, 26 Nov 2026 09:00:00 +0000",
            "Bercy table sur des recettes fiscales plus élevées que prévu.",
        ),
    ])
}

fn two_feeds() -> Site {
    Site::new(&[
        ("monde.xml", "Monde", world()),
        ("eco.xml", "Économie", economy()),
    ])
}

fn digest_json(site: &Site, date: &str) -> serde_json::Value {
    let bytes = std::fs::read(site.issue(date).join("digest.json")).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn story_urls(d: &serde_json::Value) -> Vec<String> {
    d["stories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["url"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn build_archives_digest_html_and_text_for_the_date() {
    let site = two_feeds();
    let o = site.run(&["build", "--date", DATE, "--now", NOW]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let dir = site.issue(DATE);
    for f in ["digest.json", "email.html", "email.txt"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let d = digest_json(&site, DATE);
    let urls = story_urls(&d);
    assert_eq!(urls.len(), 4, "{urls:?}");
    assert!(
        urls.contains(&"https://news.example.com/monde/sommet-bruxelles".to_string()),
        "tracking parameters are removed: {urls:?}"
    );
    assert!(
        !urls.iter().any(|u| u.contains("vieille")),
        "old story kept: {urls:?}"
    );
    assert!(d["reading_minutes"].as_u64().unwrap() <= 5);
    let out = stdout(&o);
    assert!(out.contains("4 stories"), "{out}");
    assert!(out.contains("Monde") && out.contains("Économie"), "{out}");
    let html = std::fs::read_to_string(dir.join("email.html")).unwrap();
    assert!(html.contains("lang=\"fr\""));
    assert!(html.contains("Élections au Chili"));
    let text = std::fs::read_to_string(dir.join("email.txt")).unwrap();
    assert!(text.contains("Budget 2027"));
}

#[test]
fn the_same_inputs_and_now_give_the_same_bytes() {
    let a = two_feeds();
    let b = two_feeds();
    assert!(a
        .run(&["build", "--date", DATE, "--now", NOW])
        .status
        .success());
    assert!(b
        .run(&["build", "--date", DATE, "--now", NOW])
        .status
        .success());
    for f in ["digest.json", "email.html", "email.txt"] {
        assert_eq!(
            std::fs::read(a.issue(DATE).join(f)).unwrap(),
            std::fs::read(b.issue(DATE).join(f)).unwrap(),
            "{f} differs"
        );
    }
}

#[test]
fn a_broken_feed_is_reported_and_the_others_still_make_the_issue() {
    let site = Site::new(&[
        ("monde.xml", "Monde", world()),
        (
            "broken.xml",
            "Cassé",
            "<rss><channel><item><title>oops".to_string(),
        ),
    ]);
    let o = site.run(&["build", "--date", DATE, "--now", NOW]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    assert!(
        stderr(&o).contains("Cassé"),
        "failed source not named: {}",
        stderr(&o)
    );
    assert!(stdout(&o).contains("1 failed"), "{}", stdout(&o));
    assert_eq!(story_urls(&digest_json(&site, DATE)).len(), 2);
}

#[test]
fn hostile_feed_content_never_reaches_the_html_as_markup() {
    let hostile = rss(&[(
        "&lt;script&gt;alert(1)&lt;/script&gt;Titre piégé",
        "javascript:alert(document.cookie)",
        "Fri, 27 Nov 2026 03:00:00 +0000",
        "&lt;img src=x onerror=\"alert(2)\"&gt;Résumé &lt;b&gt;gras&lt;/b&gt; &amp;amp; suite",
    )]);
    let site = Site::new(&[("monde.xml", "Monde", world()), ("h.xml", "Piège", hostile)]);
    let o = site.run(&["build", "--date", DATE, "--now", NOW]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let html = std::fs::read_to_string(site.issue(DATE).join("email.html")).unwrap();
    let lower = html.to_lowercase();
    assert!(!lower.contains("<script"), "script tag in HTML");
    assert!(!lower.contains("onerror"), "event handler in HTML");
    assert!(!lower.contains("javascript:"), "javascript: link in HTML");
    assert!(!lower.contains("<b>gras"), "feed markup in HTML");
}

#[test]
fn editor_pins_excludes_and_intro_steer_the_issue() {
    let site = two_feeds();
    std::fs::create_dir_all(site.issue(DATE)).unwrap();
    std::fs::write(
        site.issue(DATE).join("editor.toml"),
        r#"intro = "Bonjour ! Ce matin, le budget."
pin = ["https://news.example.com/eco/budget-2027-recettes?utm_medium=email"]
exclude = ["https://news.example.com/eco/ble-prix"]
"#,
    )
    .unwrap();
    let o = site.run(&["build", "--date", DATE, "--now", NOW]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let d = digest_json(&site, DATE);
    let urls = story_urls(&d);
    assert_eq!(urls[0], "https://news.example.com/eco/budget-2027-recettes");
    assert!(!urls.iter().any(|u| u.contains("ble-prix")), "{urls:?}");
    assert_eq!(d["intro"], "Bonjour ! Ce matin, le budget.");
    let text = std::fs::read_to_string(site.issue(DATE).join("email.txt")).unwrap();
    assert!(text.contains("Bonjour ! Ce matin, le budget."));
}

/// The same picks as above, made with `digestif editor` instead of by hand.
#[test]
fn the_editor_command_pins_drops_and_introduces_what_preview_then_shows() {
    let site = two_feeds();
    let ed = |args: &[&str]| {
        let mut a = vec!["editor"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--date", DATE]);
        site.run(&a)
    };
    let budget = "https://news.example.com/eco/budget-2027-recettes?utm_medium=email";
    let wheat = "https://news.example.com/eco/ble-prix";
    for o in [
        ed(&["pin", wheat]),
        ed(&["pin", budget]),
        // Dropping a pinned story unpins it.
        ed(&["drop", wheat]),
        ed(&["intro", "Bonjour ! Ce matin, le budget."]),
    ] {
        assert!(o.status.success(), "stderr: {}", stderr(&o));
    }
    let shown = ed(&["show"]);
    let text = stdout(&shown);
    assert!(
        text.contains("intro: Bonjour ! Ce matin, le budget."),
        "{text}"
    );
    assert!(
        text.contains("pinned:\n  1. https://news.example.com/eco/budget-2027-recettes"),
        "{text}"
    );
    assert!(
        text.contains("dropped:\n  1. https://news.example.com/eco/ble-prix"),
        "{text}"
    );

    let o = site.run(&["preview", "--date", DATE, "--now", NOW, "--format", "json"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let d: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let urls = story_urls(&d);
    assert_eq!(urls[0], "https://news.example.com/eco/budget-2027-recettes");
    assert!(!urls.iter().any(|u| u.contains("ble-prix")), "{urls:?}");
    assert_eq!(d["intro"], "Bonjour ! Ce matin, le budget.");

    // Reset and --clear undo; a bad link changes nothing and says why.
    assert!(ed(&["reset", wheat]).status.success());
    assert!(ed(&["intro", "--clear"]).status.success());
    let bad = ed(&["pin", "javascript:alert(1)"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("not a story link"),
        "{}",
        stderr(&bad)
    );
    let file = std::fs::read_to_string(site.issue(DATE).join("editor.toml")).unwrap();
    assert!(
        !file.contains("ble-prix") && !file.contains("intro") && !file.contains("javascript"),
        "{file}"
    );
    assert!(file.contains("budget-2027-recettes"), "{file}");

    // A broken file is named with its line, and left as it is.
    std::fs::write(
        site.issue(DATE).join("editor.toml"),
        "pin = [\"a\"\nintro = 3\n",
    )
    .unwrap();
    let o = ed(&["drop", wheat]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("editor.toml") && stderr(&o).contains("line"),
        "{}",
        stderr(&o)
    );
}

/// Without --date, the editor works on the next issue: today's until its send
/// time (07:00 in Paris here), tomorrow's after it.
#[test]
fn editor_and_preview_default_to_the_next_issue() {
    let site = two_feeds();
    let before = site.run(&["editor", "show", "--now", "2026-11-27T06:59:00+01:00"]);
    assert!(
        stdout(&before).contains("editor's picks for 2026-11-27"),
        "{}",
        stdout(&before)
    );
    let after = site.run(&["editor", "show", "--now", "2026-11-27T07:00:00+01:00"]);
    assert!(
        stdout(&after).contains("editor's picks for 2026-11-28"),
        "{}",
        stdout(&after)
    );

    let o = site.run(&[
        "preview",
        "--now",
        "2026-11-27T06:59:00+01:00",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let d: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(d["date"], DATE, "before the send time: today's issue");
    let o = site.run(&[
        "preview",
        "--now",
        "2026-11-27T09:00:00+01:00",
        "--format",
        "json",
    ]);
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        said.contains("2026-11-28"),
        "after the send time: tomorrow's issue: {said}"
    );
}

/// `preview --for` shows the email one reader gets: their language, their name,
/// their sections first, their own unsubscribe link.
#[test]
fn preview_for_a_subscriber_shows_their_own_email() {
    let site = two_feeds();
    let o = site.run(&[
        "subscribers",
        "add",
        "ann@example.org",
        "--name",
        "Ann",
        "--locale",
        "en",
        "--categories",
        "Économie",
    ]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let o = site.run(&[
        "preview",
        "--date",
        DATE,
        "--now",
        NOW,
        "--format",
        "text",
        "--for",
        "ann@example.org",
    ]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("Hello Ann,"), "{text}");
    assert!(
        text.contains("/unsubscribe?token="),
        "a personal link: {text}"
    );
    let (eco, world) = (text.find("ÉCONOMIE").unwrap(), text.find("MONDE").unwrap());
    assert!(eco < world, "the reader's section comes first: {text}");
    let public = stdout(&site.run(&["preview", "--date", DATE, "--now", NOW, "--format", "text"]));
    assert!(
        !public.contains("Hello Ann") && !public.contains("token="),
        "{public}"
    );

    let o = site.run(&[
        "preview",
        "--date",
        DATE,
        "--now",
        NOW,
        "--for",
        "nobody@example.org",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not a subscriber"), "{}", stderr(&o));
}

#[test]
fn a_story_sent_in_an_earlier_issue_is_not_repeated() {
    let site = two_feeds();
    assert!(site
        .run(&["build", "--date", DATE, "--now", NOW])
        .status
        .success());
    // Pretend these stories went out in the issue of the 26th.
    std::fs::rename(site.issue(DATE), site.issue("2026-11-26")).unwrap();
    let lines = site.candidates();
    let chili = lines
        .iter()
        .find(|l| l["url"].as_str().unwrap_or("").ends_with("/monde/chili"))
        .expect("chili candidate");
    assert_eq!(chili["picked"], false);
    assert!(
        chili["reason"]
            .as_str()
            .unwrap()
            .contains("already sent on 2026-11-26"),
        "{chili}"
    );
}

#[test]
fn articles_json_lists_every_candidate_with_its_verdict() {
    let site = two_feeds();
    let lines = site.candidates();
    assert_eq!(lines.len(), 5);
    for l in &lines {
        for k in [
            "title",
            "url",
            "source",
            "category",
            "published",
            "score",
            "picked",
            "reason",
        ] {
            assert!(l.get(k).is_some(), "{k} missing in {l}");
        }
        chrono::DateTime::parse_from_rfc3339(l["published"].as_str().unwrap()).unwrap();
    }
    let old = lines
        .iter()
        .find(|l| l["url"].as_str().unwrap().contains("vieille"))
        .unwrap();
    assert_eq!(old["picked"], false);
    assert_eq!(old["reason"], "outside the window");
    assert!(!site.issue(DATE).exists(), "articles must not archive");
}

#[test]
fn preview_prints_the_issue_and_archives_nothing() {
    let site = two_feeds();
    let o = site.run(&["preview", "--date", DATE, "--now", NOW, "--format", "text"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    assert!(stdout(&o).contains("Élections au Chili"));
    assert!(!site.issue(DATE).exists());
    // Once archived, preview shows exactly the archived text.
    assert!(site
        .run(&["build", "--date", DATE, "--now", NOW])
        .status
        .success());
    let o = site.run(&["preview", "--date", DATE, "--format", "text"]);
    assert_eq!(
        stdout(&o),
        std::fs::read_to_string(site.issue(DATE).join("email.txt")).unwrap()
    );
    let o = site.run(&["preview", "--date", DATE, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["date"], DATE);
}

#[test]
fn nothing_new_writes_no_issue_and_says_so() {
    let site = two_feeds();
    let o = site.run(&[
        "build",
        "--date",
        "2026-12-25",
        "--now",
        "2026-12-25T06:00:00Z",
    ]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    assert!(stdout(&o).contains("Nothing new"), "{}", stdout(&o));
    assert!(!site.issue("2026-12-25").exists());
}

/// No source could be read: that is an error naming each source, not "nothing
/// new" (the scheduler retries it; an editor sees why there is no issue).
#[test]
fn every_source_failing_is_an_error_for_build_and_preview_not_nothing_new() {
    let site = Site::new(&[(
        "broken.xml",
        "Cassé",
        "<rss><channel><item><title>oops".to_string(),
    )]);
    for cmd in ["build", "preview"] {
        let o = site.run(&[cmd, "--date", DATE, "--now", NOW]);
        assert_eq!(o.status.code(), Some(1), "{cmd}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("every source failed") && stderr(&o).contains("Cassé"),
            "{cmd}: {}",
            stderr(&o)
        );
        assert!(!stdout(&o).contains("Nothing new"), "{cmd}: {}", stdout(&o));
    }
    assert!(!site.issue(DATE).exists());
}

#[test]
fn a_config_error_exits_2_naming_the_key_and_line() {
    let site = two_feeds();
    let cfg = site.path().join("digestif.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("window_hours", "window_hourz");
    std::fs::write(&cfg, text).unwrap();
    let o = site.run(&["build"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("window_hourz") && e.contains("line 8"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn a_missing_config_exits_2_with_a_hint() {
    let o = digestif_at(Path::new("/nonexistent/digestif.toml"), &["build"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--config"), "{}", stderr(&o));
}

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/feeds")
        .join(name);
    String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned()
}

#[test]
fn hostile_and_broken_fixture_feeds_leave_a_clean_issue() {
    let mut huge = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><rss version=\"2.0\"><channel><title>H</title><link>https://h.example.com/</link><description>d</description><item><title>Un article immense</title><link>https://h.example.com/immense</link><pubDate>Thu, 26 Nov 2026 16:00:00 +0000</pubDate><description>",
    );
    for _ in 0..200_000 {
        huge.push_str("mot ");
    }
    huge.push_str("</description></item></channel></rss>");
    let site = Site::new(&[
        ("hostile.xml", "Piège", fixture("hostile.xml")),
        ("hostile.json", "PiègeJSON", fixture("hostile.json")),
        ("broken.xml", "Cassé", fixture("broken.xml")),
        ("huge.xml", "Immense", huge),
        ("monde.xml", "Monde", world()),
    ]);
    // The wrong-encoding fixture is raw bytes: copy it as is.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/feeds/wrong-encoding.xml"),
        site.path().join("feeds/wrong.xml"),
    )
    .unwrap();
    let cfg = site.path().join("digestif.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("\n[[sources]]\nname = \"Encodage\"\npath = \"feeds/wrong.xml\"\n");
    std::fs::write(&cfg, text).unwrap();

    let o = site.run(&["build", "--date", DATE, "--now", NOW]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("Cassé"), "broken feed not reported: {err}");
    assert!(
        err.contains("Encodage"),
        "wrong encoding not reported: {err}"
    );
    let html = std::fs::read_to_string(site.issue(DATE).join("email.html")).unwrap();
    let lower = html.to_lowercase();
    for bad in ["<script", "javascript:", "<iframe", "<svg"] {
        assert!(!lower.contains(bad), "{bad} reached the HTML");
    }
    for tag in lower.split('<').skip(1) {
        let tag = tag.split('>').next().unwrap_or("");
        for attr in tag.split_whitespace().skip(1) {
            assert!(
                !(attr.starts_with("on") && attr.contains('=')),
                "event handler attribute in <{tag}>"
            );
        }
    }
    assert!(html.len() < 102 * 1024, "HTML is {} bytes", html.len());
    let text = std::fs::read_to_string(site.issue(DATE).join("email.txt")).unwrap();
    assert!(!text.contains('\r'), "CR in the text twin");
    let d = digest_json(&site, DATE);
    for s in d["stories"].as_array().unwrap() {
        let title = s["title"].as_str().unwrap();
        assert!(!title.contains('\n') && !title.contains('<'), "{title:?}");
        assert!(s["summary"].as_str().unwrap().chars().count() <= 221);
    }
}

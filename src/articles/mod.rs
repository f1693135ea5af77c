//! Clean text, canonical links and deduplication for [`Article`](crate::domain::Article)s: plain text
//! only, canonical http(s) links, one story however many sources carry it.
//! (Turning a feed item into an article is `ingest::normalise`, which uses these.)
//!
//! Everything here is pure. Feed text arrives as HTML of unknown quality; it leaves
//! as plain text (the renderer escapes it again, so this is about cleanliness, not
//! the only line of defence). HTML is turned into text by a small state machine
//! rather than a full HTML5 parser: we only need the words, not a layout, and the
//! rules that matter (drop `<script>`/`<style>` bodies, tags vanish, entities decode,
//! block tags separate words) fit in a page that the tests of `text` pin down.

mod dedupe;
mod links;
mod text;

pub use dedupe::{dedupe, title_fingerprint, titles_match};
pub use links::canonical_url;
pub use text::{clean_text, cut_at_word, fold_whitespace, strip_tags};

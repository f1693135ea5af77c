//! Normalising feed items into clean [`Article`]s and deduplicating them:
//! plain text only, canonical http(s) links, one story however many sources carry it.

use crate::domain::Article;

/// Folds duplicates: the same canonical URL, or near-identical titles published
/// the same day. Keeps the best source (highest weight, then earliest, then URL),
/// records the others in `also_in`. Returns the kept articles and, for each
/// dropped one, the URL (or key) of the story it duplicates.
pub fn dedupe(articles: Vec<Article>) -> (Vec<Article>, Vec<(Article, String)>) {
    let _ = articles;
    todo!("dedupe")
}

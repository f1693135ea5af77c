//! SQLite backend of [`super::Store`]. All SQL lives here.

/// A store in one SQLite file.
pub struct SqliteStore {}

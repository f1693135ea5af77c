//! The editor's say on one issue: `digests/<date>/editor.toml` (intro, pin, exclude).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// What the editor asked for. URLs are compared after canonicalisation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditorPicks {
    #[serde(default)]
    pub intro: Option<String>,
    /// Always in, at the top, in this order.
    #[serde(default)]
    pub pin: Vec<String>,
    /// Never in.
    #[serde(default)]
    pub exclude: Vec<String>,
}

impl EditorPicks {
    /// Reads `path`; a missing file means no picks. Errors name the file and line.
    pub fn load(path: &Path) -> Result<EditorPicks, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(EditorPicks::default()),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        EditorPicks::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<EditorPicks, String> {
        toml::from_str(text).map_err(|e| crate::config::describe_toml_error(text, &e))
    }
}

//! Where each key of a config text sits, from the TOML parser's own spans, so
//! that an error found after parsing (a value out of range, keys that go
//! together) names the line of that very key: in its own table, whatever the
//! layout (dotted keys, inline tables, a comment after a header, a key that
//! begins like another).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// A place in the config text, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` of `text`.
    pub fn of(text: &str, offset: usize) -> Position {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

/// Key path (`smtp.ca_file`, `sources[1].weight`, `server.trusted_proxies[0]`)
/// → byte range of its value in the text.
#[derive(Debug, Default)]
pub struct KeySpans(BTreeMap<String, Range<usize>>);

impl KeySpans {
    /// The spans of `text`; empty when it is not TOML (the parser's own error says where).
    pub fn of(text: &str) -> KeySpans {
        let mut spans = KeySpans::default();
        if let Ok(root) = toml::from_str::<Node>(text) {
            spans.walk("", root);
        }
        spans
    }

    fn walk(&mut self, path: &str, node: Node) {
        match node {
            Node::Table(entries) => {
                for (key, value) in entries {
                    let path = if path.is_empty() {
                        key
                    } else {
                        format!("{path}.{key}")
                    };
                    self.insert(path, value);
                }
            }
            Node::Array(items) => {
                for (i, value) in items.into_iter().enumerate() {
                    self.insert(format!("{path}[{i}]"), value);
                }
            }
            Node::Leaf => {}
        }
    }

    fn insert(&mut self, path: String, value: Spanned<Node>) {
        self.0.insert(path.clone(), value.span());
        self.walk(&path, value.into_inner());
    }

    /// Where `key` is written, else where its nearest enclosing table or array is
    /// (a key that is missing is reported at its table); `None` when neither is
    /// in the text.
    pub fn span(&self, key: &str) -> Option<Range<usize>> {
        let mut key = key;
        loop {
            if let Some(span) = self.0.get(key) {
                return Some(span.clone());
            }
            key = &key[..key.rfind(['.', '['])?];
        }
    }

    /// The innermost key whose value holds byte `offset`.
    pub fn key_at(&self, offset: usize) -> Option<&str> {
        self.0
            .iter()
            .filter(|(_, span)| span.contains(&offset))
            .min_by_key(|(_, span)| span.len())
            .map(|(key, _)| key.as_str())
    }
}

/// The shape of a TOML document with the span of every value.
enum Node {
    Table(Vec<(String, Spanned<Node>)>),
    Array(Vec<Spanned<Node>>),
    Leaf,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            entries.push((key, map.next_value::<Spanned<Node>>()?));
        }
        Ok(Node::Table(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_str<E>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str, key: &str) -> Option<usize> {
        let spans = KeySpans::of(text);
        spans.span(key).map(|s| Position::of(text, s.start).line)
    }

    #[test]
    fn each_key_is_found_in_its_own_table_whatever_the_layout() {
        let text = "top = 1\n\
                    [fetch]\n\
                    timeout_s = 10\n\
                    [smtp] # the relay\n\
                    timeout_s_extra = 1\n\
                    timeout_s = 0\n\
                    limits = { rate = 2, burst = [1, 2] }\n\
                    [[sources]]\n\
                    name = \"a\"\n\
                    [[sources]]\n\
                    name = \"b\"\n\
                    weight = -1.0\n";
        assert_eq!(line(text, "top"), Some(1));
        assert_eq!(line(text, "fetch.timeout_s"), Some(3));
        assert_eq!(line(text, "smtp.timeout_s"), Some(6));
        assert_eq!(line(text, "smtp.limits.rate"), Some(7));
        assert_eq!(line(text, "smtp.limits.burst[1]"), Some(7));
        assert_eq!(line(text, "sources[1].name"), Some(11));
        assert_eq!(line(text, "sources[1].weight"), Some(12));
        // A key that is not written is reported at its table.
        assert_eq!(line(text, "fetch.max_bytes"), Some(2));
        assert_eq!(line(text, "nowhere.at_all"), None);
    }

    #[test]
    fn positions_count_lines_and_characters_from_one() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(Position::of(text, 0), Position { line: 1, column: 1 });
        let at = text.find("\"x\"").unwrap();
        assert_eq!(Position::of(text, at), Position { line: 2, column: 6 });
    }
}

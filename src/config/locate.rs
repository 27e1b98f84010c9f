//! Where each key of the configuration file is: a map from key paths
//! (`sinks[2].path`, zero-based indices) to byte spans, built from the text
//! with `toml::Spanned`.
//!
//! toml's errors carry a span but not the key path, and validation knows the
//! path but not the line; this map connects the two. It is best-effort: a
//! document that uses dotted keys or implicit tables (`[api.x]`,
//! `password.file = ...`) has tables without spans, which `Spanned` refuses,
//! and then the map is empty and messages fall back to the error's own span
//! or to the key path alone.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// A 1-based line and column (in characters) in the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `text`.
    pub(super) fn of(text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One key (or array element) of the document.
#[derive(Debug)]
struct Entry {
    path: String,
    depth: usize,
    /// `None` for array elements, which have no key.
    key: Option<Range<usize>>,
    value: Range<usize>,
}

/// Key paths and their spans; see the module documentation.
#[derive(Debug, Default)]
pub(super) struct Locator {
    entries: Vec<Entry>,
    by_path: HashMap<String, usize>,
}

impl Locator {
    /// Maps `text`; an unparsable or unmappable document gives an empty map.
    pub(super) fn new(text: &str) -> Self {
        let mut locator = Locator::default();
        if let Ok(root) = toml::from_str::<Node>(text) {
            locator.walk(&root, "", 0);
        }
        locator
    }

    fn walk(&mut self, node: &Node, prefix: &str, depth: usize) {
        match node {
            Node::Table(entries) => {
                for (key, value) in entries {
                    let path = if prefix.is_empty() {
                        key.get_ref().clone()
                    } else {
                        format!("{prefix}.{}", key.get_ref())
                    };
                    self.push(path.clone(), depth + 1, Some(key.span()), value.span());
                    self.walk(value.get_ref(), &path, depth + 1);
                }
            }
            Node::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let path = format!("{prefix}[{i}]");
                    self.push(path.clone(), depth + 1, None, item.span());
                    self.walk(item.get_ref(), &path, depth + 1);
                }
            }
            Node::Leaf => {}
        }
    }

    fn push(&mut self, path: String, depth: usize, key: Option<Range<usize>>, value: Range<usize>) {
        self.by_path.insert(path.clone(), self.entries.len());
        self.entries.push(Entry {
            path,
            depth,
            key,
            value,
        });
    }

    /// The deepest key path whose key or value contains byte `offset`, and
    /// whether `offset` is on the key itself rather than in its value.
    pub(super) fn path_at(&self, offset: usize) -> Option<(&str, bool)> {
        let contains = |r: &Range<usize>| r.start <= offset && (offset < r.end || r.is_empty());
        self.entries
            .iter()
            .filter_map(|e| {
                if e.key.as_ref().is_some_and(contains) {
                    Some((e, true))
                } else if contains(&e.value) {
                    Some((e, false))
                } else {
                    None
                }
            })
            .max_by_key(|(e, on_key)| (e.depth, *on_key))
            .map(|(e, on_key)| (e.path.as_str(), on_key))
    }

    /// The key path whose value is exactly `span`: the table a "missing
    /// field" error is about.
    pub(super) fn path_of_value(&self, span: &Range<usize>) -> Option<&str> {
        self.entries
            .iter()
            .filter(|e| e.value == *span)
            .max_by_key(|e| e.depth)
            .map(|e| e.path.as_str())
    }

    /// Where the value of `path` starts, or where its nearest mapped
    /// ancestor starts when `path` itself is not in the file.
    pub(super) fn value_start(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(&i) = self.by_path.get(path) {
                return Some(self.entries[i].value.start);
            }
            path = parent(path)?;
        }
    }

    /// Where the key `path` itself is written, if it is.
    pub(super) fn key_start(&self, path: &str) -> Option<usize> {
        let entry = &self.entries[*self.by_path.get(path)?];
        entry.key.as_ref().map(|k| k.start)
    }
}

/// The path one level up: `sinks[2].path` → `sinks[2]` → `sinks` → none.
pub(super) fn parent(path: &str) -> Option<&str> {
    let cut = path.rfind(['.', '['])?;
    Some(&path[..cut])
}

/// A value of the document, reduced to its shape.
#[derive(Debug)]
enum Node {
    Table(Vec<(Spanned<String>, Spanned<Node>)>),
    Array(Vec<Spanned<Node>>),
    Leaf,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
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

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Table(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[api]\nclient_id = \"x\"\n\n\
                        [[sinks]]\ntype = \"file\"\n\n\
                        [[sinks]]\nselect = { users = [\"a\", \"b\"] }\n";

    #[test]
    fn finds_paths_by_offset() {
        let locator = Locator::new(TEXT);
        let at = |needle: &str| locator.path_at(TEXT.find(needle).unwrap());
        assert_eq!(at("client_id"), Some(("api.client_id", true)));
        assert_eq!(at("\"x\""), Some(("api.client_id", false)));
        assert_eq!(at("type"), Some(("sinks[0].type", true)));
        assert_eq!(at("\"b\""), Some(("sinks[1].select.users[1]", false)));
        assert_eq!(at("[[sinks]]\nselect"), Some(("sinks[1]", false)));
        let table = locator.by_path["sinks[1]"];
        assert_eq!(
            locator.path_of_value(&locator.entries[table].value),
            Some("sinks[1]")
        );
        assert_eq!(locator.path_of_value(&(0..0)), None);
    }

    #[test]
    fn finds_offsets_by_path() {
        let locator = Locator::new(TEXT);
        let loc = |path: &str| Location::of(TEXT, locator.value_start(path).unwrap());
        assert_eq!(
            loc("api.client_id"),
            Location {
                line: 2,
                column: 13
            }
        );
        assert_eq!(loc("sinks[1]"), Location { line: 7, column: 1 });
        // Not in the file: falls back to the nearest ancestor.
        assert_eq!(loc("sinks[1].path"), Location { line: 7, column: 1 });
        assert_eq!(
            Location::of(TEXT, locator.key_start("sinks[0].type").unwrap()),
            Location { line: 5, column: 1 }
        );
    }

    #[test]
    fn location_counts_characters_not_bytes() {
        let text = "a = \"é\"\nb = 1";
        assert_eq!(
            Location::of(text, text.find('b').unwrap()),
            Location { line: 2, column: 1 }
        );
        assert_eq!(Location::of(text, 6), Location { line: 1, column: 6 });
    }

    #[test]
    fn dotted_keys_give_an_empty_map() {
        let locator = Locator::new("api.client_id = \"x\"\n");
        assert_eq!(locator.path_at(0), None);
        assert_eq!(locator.value_start("api.client_id"), None);
    }

    #[test]
    fn parent_walks_up_paths() {
        assert_eq!(
            parent("sinks[2].select.users[0]"),
            Some("sinks[2].select.users")
        );
        assert_eq!(parent("sinks[2]"), Some("sinks"));
        assert_eq!(parent("sinks"), None);
    }
}

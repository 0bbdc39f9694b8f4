//! YAML configs (Traefik's, Envoy's) read with the line and column of every node, and the
//! edits that add keys to a block mapping or items to a block sequence in place, indented like
//! their siblings, so the corrected copy keeps the user's layout and comments.
//!
//! Read with `marked-yaml` (YAML 1.2 on yaml-rust2, with spans): serde's YAML readers drop
//! the positions a `file:line` needs.

use marked_yaml::types::{MarkedMappingNode, MarkedSequenceNode};
pub use marked_yaml::Node;

use super::Edit;

/// The document, or why it does not parse.
pub fn parse(text: &str) -> Result<Node, String> {
    marked_yaml::parse_yaml(0, text).map_err(|e| e.to_string())
}

/// The node at `path` (mapping keys from `node`).
pub fn get<'a>(node: &'a Node, path: &[&str]) -> Option<&'a Node> {
    path.iter().try_fold(node, |n, key| n.as_mapping()?.get_node(key))
}

/// A scalar's text (`None` for a mapping, a sequence or a missing node).
pub fn text(node: Option<&Node>) -> Option<&str> {
    node.and_then(Node::as_scalar).map(|s| s.as_str())
}

/// The 1-based line a node starts on.
pub fn line(node: &Node) -> usize {
    node.span().start().map(|m| m.line()).unwrap_or(1)
}

/// The line of `key` in a mapping.
pub fn key_line(map: &MarkedMappingNode, key: &str) -> Option<usize> {
    map.iter().find(|(k, _)| k.as_str() == key).and_then(|(k, _)| k.span().start().map(|m| m.line()))
}

/// The last line a node's content reaches (its deepest, latest descendant).
pub fn last_line(node: &Node) -> usize {
    match node {
        Node::Scalar(_) => line(node),
        Node::Mapping(m) => m.iter().map(|(k, v)| k.span().start().map(|m| m.line()).unwrap_or(1).max(last_line(v))).max().unwrap_or(line(node)),
        Node::Sequence(s) => s.iter().map(last_line).max().unwrap_or(line(node)),
    }
}

/// Every mapping item of a sequence.
pub fn items(node: Option<&Node>) -> impl Iterator<Item = &Node> {
    node.and_then(Node::as_sequence).map(|s| s.iter()).into_iter().flatten().filter(|n| n.as_mapping().is_some())
}

/// The leading whitespace of line `n` of `text`.
pub fn indent_of(text: &str, n: usize) -> String {
    let l = text.lines().nth(n.saturating_sub(1)).unwrap_or("");
    l[..l.len() - l.trim_start().len()].to_string()
}

/// One nesting step of the file (the indent of the first nested key), 2 when it has none.
pub fn step(root: &Node) -> usize {
    root.as_mapping()
        .and_then(|m| m.iter().find_map(|(_, v)| v.as_mapping().and_then(|c| c.iter().next()).and_then(|(k, _)| k.span().start().map(|m| m.column() - 1))))
        .filter(|s| *s > 0)
        .unwrap_or(2)
}

/// Whether a collection is written in flow style (`{...}`, `[...]`), where no line can be
/// inserted.
fn flow(text: &str, node: &Node) -> bool {
    let Some(start) = node.span().start() else { return true };
    let l = text.lines().nth(start.line() - 1).unwrap_or("");
    matches!(l.chars().nth(start.column() - 1), Some('{') | Some('['))
}

/// Lines (`block`, written at indent 0 with `step`-space nesting) added to a block mapping:
/// after the entry `after` where it has one, else after its last entry. `None` for a flow or
/// empty mapping.
pub fn add_to_mapping(text: &str, map: &Node, after: Option<&str>, block: &[String]) -> Option<Edit> {
    let m = map.as_mapping()?;
    if flow(text, map) {
        return None;
    }
    let (first, _) = m.iter().next()?;
    let indent = " ".repeat(first.span().start()?.column() - 1);
    let line = match after.and_then(|a| m.iter().find(|(k, _)| k.as_str() == a)) {
        Some((k, v)) => k.span().start().map(|s| s.line()).unwrap_or(1).max(last_line(v)),
        None => last_line(map),
    };
    Some(Edit::InsertAfter { line, lines: block.iter().map(|l| format!("{indent}{l}")).collect() })
}

/// Items (each `- first line`, further lines at indent 0 relative to the item) added after
/// the last item of a block sequence, with their dash where the others have theirs.
pub fn add_to_sequence(text: &str, seq: &MarkedSequenceNode, items: &[Vec<String>]) -> Option<Edit> {
    let last = seq.last()?;
    let start = last.span().start()?;
    let l = text.lines().nth(start.line() - 1)?;
    // The dash is the last `-` before the item's column on its line.
    let before: String = l.chars().take(start.column() - 1).collect();
    let dash = before.rfind('-')?;
    if before[..dash].trim() != "" {
        return None;
    }
    let pad = " ".repeat(dash);
    let inner = " ".repeat(start.column() - 1);
    let lines = items.iter().flat_map(|item| item.iter().enumerate().map(|(i, x)| if i == 0 { format!("{pad}- {x}") } else { format!("{inner}{x}") })).collect();
    Some(Edit::InsertAfter { line: last_line(last), lines })
}

/// `block` nested `depth` steps of `step` spaces: each line's own leading spaces are kept.
pub fn nest(block: &[&str], depth: usize, step: usize) -> Vec<String> {
    block.iter().map(|l| format!("{}{l}", " ".repeat(depth * step))).collect()
}

/// Same-line insertions ordered deepest first, so a key for an inner mapping lands before a
/// key that closes it (both added after the same last line); the same edit asked by two
/// checks kept once.
pub fn order(edits: &mut Vec<Edit>) {
    let depth = |e: &Edit| match e {
        Edit::InsertAfter { lines, .. } => lines.first().map(|l| l.len() - l.trim_start().len()).unwrap_or(0),
        Edit::Replace { .. } => usize::MAX,
    };
    let at = |e: &Edit| match e {
        Edit::InsertAfter { line, .. } | Edit::Replace { line, .. } => *line,
    };
    edits.sort_by_key(|e| (at(e), std::cmp::Reverse(depth(e))));
    let mut seen: Vec<Edit> = Vec::new();
    edits.retain(|e| {
        let new = !seen.contains(e);
        seen.push(e.clone());
        new
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# c\nhttp:\n  routers:\n    app:\n      rule: \"Host(`x`)\"\n      middlewares:\n        - a\n  services:\n    app: {}\n";

    #[test]
    fn lines_and_columns_are_the_files() {
        let root = parse(TEXT).unwrap();
        let app = get(&root, &["http", "routers", "app"]).unwrap();
        assert_eq!(key_line(get(&root, &["http", "routers"]).unwrap().as_mapping().unwrap(), "app"), Some(4));
        assert_eq!(line(app), 5);
        assert_eq!(last_line(app), 7);
        assert_eq!(text(get(&root, &["http", "routers", "app", "rule"])), Some("Host(`x`)"));
        assert_eq!(step(&root), 2);
    }

    #[test]
    fn added_keys_and_items_are_indented_like_their_siblings() {
        let root = parse(TEXT).unwrap();
        let app = get(&root, &["http", "routers", "app"]).unwrap();
        let e = add_to_mapping(TEXT, app, Some("rule"), &["service: app".into()]).unwrap();
        assert_eq!(e, Edit::InsertAfter { line: 5, lines: vec!["      service: app".into()] });
        let seq = get(app, &["middlewares"]).unwrap().as_sequence().unwrap();
        assert_eq!(add_to_sequence(TEXT, seq, &[vec!["b".into()]]).unwrap(), Edit::InsertAfter { line: 7, lines: vec!["        - b".into()] });
        // A flow mapping takes no line.
        assert_eq!(add_to_mapping(TEXT, get(&root, &["http", "services", "app"]).unwrap(), None, &["x: 1".into()]), None);
        let fixed = super::super::apply(TEXT, &[e]);
        assert_eq!(text(get(&parse(&fixed).unwrap(), &["http", "routers", "app", "service"])), Some("app"));
    }
}

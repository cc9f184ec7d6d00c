//! A YAML document as a tree whose every node remembers its line and column.
//!
//! serde_yaml stops at the first problem, and its `Value` forgets positions; playbook
//! validation wants every problem at once, each with its place. So the first step of
//! loading builds this marked tree from yaml-rust2's event stream, and the second step
//! (`compile`) walks it, collecting problems.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// 1-based line and column in the playbook file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Pos { line: m.line(), col: m.col() + 1 }
    }
}

#[derive(Debug, Clone)]
pub enum Kind {
    Map(Vec<(String, Pos, Node)>),
    Seq(Vec<Node>),
    /// A scalar and whether it was quoted (a quoted `"1"` is a string, never a number).
    Scalar(String, bool),
    Null,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub kind: Kind,
    pub pos: Pos,
}

impl Node {
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            Kind::Map(_) => "a mapping",
            Kind::Seq(_) => "a list",
            Kind::Scalar(..) => "a scalar",
            Kind::Null => "null",
        }
    }
}

/// A syntax error, with the place the YAML scanner stopped.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// At most this many nodes may be materialised by aliases in one document. A playbook
/// has a few hundred nodes; nested aliases ("billion laughs") would otherwise expand a
/// 431-byte file into gigabytes. Without aliases the node count is bounded by the file
/// size (1 MiB) already.
pub const MAX_ALIAS_NODES: usize = 10_000;

enum Frame {
    Map { pos: Pos, entries: Vec<(String, Pos, Node)>, key: Option<(String, Pos)>, size: usize },
    Seq { pos: Pos, items: Vec<Node>, size: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    /// Each anchored node and its size in nodes (what an alias to it would add).
    anchors: std::collections::HashMap<usize, (Node, usize)>,
    pending_anchor: Vec<usize>,
    errors: Vec<SyntaxError>,
    /// Nodes materialised by aliases so far; see [`MAX_ALIAS_NODES`].
    aliased: usize,
    alias_limit_hit: bool,
}

impl Builder {
    fn push_node(&mut self, node: Node, size: usize) {
        match self.stack.last_mut() {
            Some(Frame::Seq { size: s, .. }) | Some(Frame::Map { size: s, .. }) => *s += size,
            None => {}
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => match node.kind {
                    Kind::Scalar(k, _) => *key = Some((k, node.pos)),
                    Kind::Null => *key = Some((String::new(), node.pos)),
                    _ => {
                        self.errors.push(SyntaxError { pos: node.pos, message: "mapping keys must be plain strings".into() });
                        *key = Some((String::new(), node.pos));
                    }
                },
                Some((k, kpos)) => {
                    if entries.iter().any(|(existing, _, _)| *existing == k) {
                        self.errors.push(SyntaxError { pos: kpos, message: format!("duplicate key `{k}`") });
                    }
                    entries.push((k, kpos, node));
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from(mark);
        match ev {
            Event::Scalar(value, style, anchor, _tag) => {
                let quoted = !matches!(style, TScalarStyle::Plain);
                let kind = if !quoted && matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL") {
                    Kind::Null
                } else {
                    Kind::Scalar(value, quoted)
                };
                let node = Node { kind, pos };
                if anchor > 0 {
                    self.anchors.insert(anchor, (node.clone(), 1));
                }
                self.push_node(node, 1);
            }
            Event::Alias(id) => {
                let (node, size) = self.anchors.get(&id).cloned().unwrap_or((Node { kind: Kind::Null, pos }, 1));
                // Checked before cloning: the clone itself is what would exhaust memory.
                if self.aliased + size > MAX_ALIAS_NODES {
                    if !self.alias_limit_hit {
                        self.alias_limit_hit = true;
                        self.errors.push(SyntaxError {
                            pos,
                            message: format!(
                                "YAML aliases expand to more than {MAX_ALIAS_NODES} nodes; a playbook needs far fewer (nested aliases?)"
                            ),
                        });
                    }
                    self.push_node(Node { kind: Kind::Null, pos }, 1);
                    return;
                }
                self.aliased += size;
                self.push_node(node, size);
            }
            Event::SequenceStart(anchor, _) => {
                self.pending_anchor.push(anchor);
                self.stack.push(Frame::Seq { pos, items: Vec::new(), size: 0 });
            }
            Event::MappingStart(anchor, _) => {
                self.pending_anchor.push(anchor);
                self.stack.push(Frame::Map { pos, entries: Vec::new(), key: None, size: 0 });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let anchor = self.pending_anchor.pop().unwrap_or(0);
                let (node, size) = match self.stack.pop() {
                    Some(Frame::Seq { pos, items, size }) => (Node { kind: Kind::Seq(items), pos }, size + 1),
                    Some(Frame::Map { pos, entries, size, .. }) => (Node { kind: Kind::Map(entries), pos }, size + 1),
                    None => return,
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, (node.clone(), size));
                }
                self.push_node(node, size);
            }
            _ => {}
        }
    }
}

/// Parses one YAML document into a marked tree. Returns every error it can find; a
/// scanner error ends the parse (YAML cannot be resynchronised reliably after one).
pub fn parse(text: &str) -> Result<Node, Vec<SyntaxError>> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, false) {
        let m = e.marker();
        builder
            .errors
            .push(SyntaxError { pos: Pos { line: m.line(), col: m.col() + 1 }, message: format!("YAML syntax error: {}", e.info()) });
        return Err(builder.errors);
    }
    if !builder.errors.is_empty() {
        return Err(builder.errors);
    }
    Ok(builder.root.unwrap_or(Node { kind: Kind::Null, pos: Pos { line: 1, col: 1 } }))
}

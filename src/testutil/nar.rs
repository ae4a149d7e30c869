//! A small NAR writer (the grammar of docs/formats.md, "NAR") for
//! building test archives in code.

/// Appends the little-endian `u64` `n`.
pub fn int(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&n.to_le_bytes());
}

/// Appends `str(s)`: length, bytes, zero padding to 8.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    int(out, s.len() as u64);
    out.extend_from_slice(s);
    out.resize(out.len() + (8 - s.len() % 8) % 8, 0);
}

/// A NAR node, serialised by [`nar`]: a file (executable?, contents),
/// a symlink (target) or a directory (entries in the given order).
pub enum Node {
    File(bool, Vec<u8>),
    Link(Vec<u8>),
    Dir(Vec<(Vec<u8>, Node)>),
}

/// A regular, non-executable file.
pub fn file(data: &[u8]) -> Node {
    Node::File(false, data.to_vec())
}

/// A directory with these entries, in this order.
pub fn dir(entries: Vec<(&[u8], Node)>) -> Node {
    Node::Dir(entries.into_iter().map(|(n, e)| (n.to_vec(), e)).collect())
}

fn write_node(out: &mut Vec<u8>, n: &Node) {
    string(out, b"(");
    string(out, b"type");
    match n {
        Node::File(x, data) => {
            string(out, b"regular");
            if *x {
                string(out, b"executable");
                string(out, b"");
            }
            string(out, b"contents");
            string(out, data);
        }
        Node::Link(t) => {
            string(out, b"symlink");
            string(out, b"target");
            string(out, t);
        }
        Node::Dir(es) => {
            string(out, b"directory");
            for (name, e) in es {
                string(out, b"entry");
                string(out, b"(");
                string(out, b"name");
                string(out, name);
                string(out, b"node");
                write_node(out, e);
                string(out, b")");
            }
        }
    }
    string(out, b")");
}

/// The whole archive of `n`.
pub fn nar(n: &Node) -> Vec<u8> {
    let mut out = Vec::new();
    string(&mut out, b"nix-archive-1");
    write_node(&mut out, n);
    out
}

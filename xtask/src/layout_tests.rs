//! The modules of the xtask, and of the guest ABI crate, import each other without a circle.
//!
//! The graph is read from the sources themselves, at the granularity of files: every
//! `use crate::...` tree (braces expanded) and every other `crate::a::b` path (`$crate::` in
//! macros too) names the file of the longest module path it starts with; comments, strings
//! and character literals are skipped. Paths through `super::` or `self::` and a parent's
//! relative paths to its own children (`use child::Item;`) are not followed: cross-module
//! paths in the xtask are written from `crate::`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// File (relative to `src/`, with `/`) → the files it imports from (never itself).
type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn xtask_modules_have_no_import_cycle() {
    assert_no_import_cycle(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
}

#[test]
fn guest_abi_modules_have_no_import_cycle() {
    assert_no_import_cycle(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/eryx-guest-abi/src"));
}

fn assert_no_import_cycle(src: &Path) {
    let files = read_sources(src);
    assert!(!files.is_empty(), "no Rust sources in {}", src.display());
    let cycles = cycles(&graph(&files));
    assert!(
        cycles.is_empty(),
        "import cycles among the modules of {}:\n{}",
        src.display(),
        cycles.iter().map(Circle::describe).collect::<Vec<_>>().join("\n")
    );
}

/// A source file: its name relative to `src/`, its module path and its text.
struct Source {
    name: String,
    module: Vec<String>,
    text: String,
}

/// Every `.rs` file below `src`, with the module path the 2018 layout gives it (`main.rs`
/// and `lib.rs` are the root, `a/mod.rs` and `a.rs` are `a`, `a/b.rs` is `a::b`).
fn read_sources(src: &Path) -> Vec<Source> {
    let mut files = Vec::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(directory) = pending.pop() {
        let entries = std::fs::read_dir(&directory).unwrap_or_else(|error| panic!("read {}: {error}", directory.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|extension| extension != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap();
            let mut module: Vec<String> =
                relative.iter().map(|part| part.to_string_lossy().trim_end_matches(".rs").to_owned()).collect();
            let name = module.join("/") + ".rs";
            let last = module.pop().unwrap();
            let root = module.is_empty() && (last == "main" || last == "lib");
            if !root && last != "mod" {
                module.push(last);
            }
            let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
            files.push(Source { name, module, text });
        }
    }
    files.sort_by(|one, two| one.name.cmp(&two.name));
    files
}

/// The import graph of `files`.
fn graph(files: &[Source]) -> Graph {
    let by_module: BTreeMap<&[String], &str> = files.iter().map(|file| (file.module.as_slice(), file.name.as_str())).collect();
    let mut graph = Graph::new();
    for file in files {
        let imports = graph.entry(file.name.clone()).or_default();
        for path in crate_paths(&file.text) {
            // The longest prefix of the path that is a module with a file of its own.
            let target = (0..=path.len()).rev().find_map(|length| by_module.get(&path[..length]));
            if let Some(&target) = target {
                if target != file.name {
                    imports.insert(target.to_owned());
                }
            }
        }
    }
    graph
}

/// Every path below `crate::` in `source` (without the `crate` segment).
fn crate_paths(source: &str) -> Vec<Vec<String>> {
    let tokens = tokens(&strip(source));
    let mut paths = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i] == "use" {
            i += 1;
            if tokens.get(i).is_some_and(|token| token == "::") {
                i += 1;
            }
            let mut tree = Vec::new();
            use_tree(&tokens, &mut i, Vec::new(), &mut tree);
            paths.extend(tree.into_iter().filter_map(|path| from_crate(&path)));
        } else if (tokens[i] == "crate" || tokens[i] == "$crate") && tokens.get(i + 1).is_some_and(|token| token == "::") {
            let mut path = vec!["crate".to_owned()];
            i += 2;
            while i < tokens.len() && is_identifier(&tokens[i]) {
                path.push(tokens[i].clone());
                i += 1;
                if tokens.get(i).is_some_and(|token| token == "::") && tokens.get(i + 1).is_some_and(|token| is_identifier(token)) {
                    i += 1;
                } else {
                    break;
                }
            }
            paths.extend(from_crate(&path));
        } else {
            i += 1;
        }
    }
    paths
}

/// `path` without its leading `crate`, when it starts there.
fn from_crate(path: &[String]) -> Option<Vec<String>> {
    match path.split_first() {
        Some((first, rest)) if first == "crate" || first == "$crate" => Some(rest.to_vec()),
        _ => None,
    }
}

/// Reads one use tree at `tokens[*i]` below `prefix`; every path it names goes to `out`.
fn use_tree(tokens: &[String], i: &mut usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    while let Some(token) = tokens.get(*i) {
        match token.as_str() {
            "{" => {
                *i += 1;
                while let Some(token) = tokens.get(*i) {
                    match token.as_str() {
                        "}" => {
                            *i += 1;
                            break;
                        }
                        "," => *i += 1,
                        ";" => return,
                        _ => {
                            let before = *i;
                            use_tree(tokens, i, prefix.clone(), out);
                            if *i == before {
                                *i += 1;
                            }
                        }
                    }
                }
                return;
            }
            "*" => {
                *i += 1;
                out.push(prefix);
                return;
            }
            name if is_identifier(name) => {
                if name != "self" {
                    prefix.push(name.to_owned());
                }
                *i += 1;
                if tokens.get(*i).is_some_and(|token| token == "::") {
                    *i += 1;
                    continue;
                }
                if tokens.get(*i).is_some_and(|token| token == "as") {
                    *i += 2;
                }
                out.push(prefix);
                return;
            }
            _ => return,
        }
    }
}

fn is_identifier(token: &str) -> bool {
    token.chars().next().is_some_and(|first| first.is_alphabetic() || first == '_' || first == '$')
}

/// Identifiers (`$crate` included), `::`, and every other character on its own.
fn tokens(code: &str) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' || (c == '$' && chars.get(i + 1).is_some_and(|next| next.is_alphabetic())) {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push("::".to_owned());
            i += 2;
        } else {
            tokens.push(c.to_string());
            i += 1;
        }
    }
    tokens
}

/// `source` with comments, string literals (raw and byte ones too) and character literals
/// replaced by a space; lifetimes stay.
fn strip(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let is_identifier_char = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if let Some(end) = raw_string_end(&chars, i, is_identifier_char) {
            i = end;
            out.push(' ');
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(' ');
        } else if c == '\'' && next == Some('\\') {
            // `'\n'`, `'\''`, `'\u{..}'`: past the escaped character, then to the quote.
            i += 3;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push(' ');
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push(' ');
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// When a raw string (`r"..."`, `r#"..."#`, `br"..."`) starts at `chars[i]`: the index after it.
fn raw_string_end(chars: &[char], i: usize, is_identifier_char: impl Fn(char) -> bool) -> Option<usize> {
    if chars[i] != 'r' {
        return None;
    }
    let starts_token = match i.checked_sub(1).map(|before| chars[before]) {
        None => true,
        Some('b') => i < 2 || !is_identifier_char(chars[i - 2]),
        Some(before) => !is_identifier_char(before),
    };
    if !starts_token {
        return None;
    }
    let mut j = i + 1;
    while chars.get(j) == Some(&'#') {
        j += 1;
    }
    if chars.get(j) != Some(&'"') {
        return None;
    }
    let hashes = j - i - 1;
    j += 1;
    while j < chars.len() {
        if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(chars.len())
}

/// One strongly connected component of more than one file: a shortest way round from its
/// first file, and every file of it.
#[derive(Debug)]
struct Circle {
    way: Vec<String>,
    component: BTreeSet<String>,
}

impl Circle {
    fn describe(&self) -> String {
        let others: Vec<&str> =
            self.component.iter().map(String::as_str).filter(|file| !self.way.iter().any(|on_way| on_way == file)).collect();
        if others.is_empty() {
            format!("  {}", self.way.join(" -> "))
        } else {
            format!("  {} (entangled with {})", self.way.join(" -> "), others.join(", "))
        }
    }
}

/// Every circle of `graph`, one per strongly connected component with more than one file.
fn cycles(graph: &Graph) -> Vec<Circle> {
    let mut found = Vec::new();
    let mut assigned: BTreeSet<&str> = BTreeSet::new();
    for start in graph.keys() {
        if assigned.contains(start.as_str()) {
            continue;
        }
        // The component of `start`: what it reaches that also reaches it.
        let forward = reachable(graph, start);
        let component: BTreeSet<&str> =
            forward.iter().copied().filter(|node| *node == start || reachable(graph, node).contains(start.as_str())).collect();
        assigned.extend(component.iter().copied());
        if component.len() < 2 {
            continue;
        }
        // The shortest way round from `start`, inside the component.
        let mut previous: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start.as_str()]);
        let mut closing = None;
        while let Some(node) = queue.pop_front() {
            for next in graph.get(node).into_iter().flatten() {
                if next == start {
                    closing = Some(node);
                    break;
                }
                if component.contains(next.as_str()) && !previous.contains_key(next.as_str()) {
                    previous.insert(next, node);
                    queue.push_back(next);
                }
            }
            if closing.is_some() {
                break;
            }
        }
        let mut node = closing.expect("a component of more than one file has a way round");
        let mut way = Vec::new();
        while node != start {
            way.push(node.to_owned());
            node = previous[node];
        }
        way.reverse();
        let way = [vec![start.clone()], way, vec![start.clone()]].concat();
        found.push(Circle { way, component: component.iter().map(|file| file.to_string()).collect() });
    }
    found
}

/// The files `start` imports from, directly or not, and itself.
fn reachable<'a>(graph: &'a Graph, start: &'a str) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::from([start]);
    let mut pending = vec![start];
    while let Some(node) = pending.pop() {
        for next in graph.get(node).into_iter().flatten() {
            if seen.insert(next.as_str()) {
                pending.push(next);
            }
        }
    }
    seen
}

mod detector {
    use super::*;

    fn graph_of(edges: &[(&str, &[&str])]) -> Graph {
        edges.iter().map(|(from, to)| (from.to_string(), to.iter().map(|name| name.to_string()).collect())).collect()
    }

    fn source(name: &str, module: &[&str], text: &str) -> Source {
        Source { name: name.into(), module: module.iter().map(|part| part.to_string()).collect(), text: text.into() }
    }

    #[test]
    fn a_graph_without_a_circle_passes() {
        let graph = graph_of(&[("a.rs", &["b.rs", "c.rs"]), ("b.rs", &["c.rs"]), ("c.rs", &[]), ("d.rs", &["a.rs", "c.rs"])]);
        assert!(cycles(&graph).is_empty());
    }

    #[test]
    fn every_circle_is_found_and_named() {
        let graph = graph_of(&[
            ("a.rs", &["b.rs"]),
            ("b.rs", &["c.rs"]),
            ("c.rs", &["a.rs", "d.rs"]),
            ("d.rs", &[]),
            ("e.rs", &["f.rs", "a.rs"]),
            ("f.rs", &["e.rs"]),
        ]);
        let found = cycles(&graph);
        let ways: Vec<&[String]> = found.iter().map(|circle| circle.way.as_slice()).collect();
        assert_eq!(ways, [&["a.rs", "b.rs", "c.rs", "a.rs"][..], &["e.rs", "f.rs", "e.rs"][..]]);
        assert_eq!(found[0].describe(), "  a.rs -> b.rs -> c.rs -> a.rs");
    }

    #[test]
    fn a_circle_names_the_files_entangled_with_it() {
        let graph = graph_of(&[("a.rs", &["b.rs", "c.rs"]), ("b.rs", &["a.rs"]), ("c.rs", &["d.rs"]), ("d.rs", &["a.rs"])]);
        let found = cycles(&graph);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].describe(), "  a.rs -> b.rs -> a.rs (entangled with c.rs, d.rs)");
    }

    #[test]
    fn the_graph_follows_crate_paths_and_skips_comments_and_strings() {
        let files = [
            source("main.rs", &[], "mod a; mod b; mod c; mod d; fn main() { a::f(); }"),
            source(
                "a.rs",
                &["a"],
                r##"use crate::b::{self, Thing as Other};
                // use crate::d::X;
                /* crate::d::Y /* nested */ crate::d::Z */
                const TEXT: &str = "crate::d::x \" crate::d::y";
                const RAW: &str = r#"use crate::d::W; "still raw""#;
                fn f<'a>(x: &'a str) -> char { crate::c::deep::g::<u8>(x); '"' }
                fn quote() -> char { '\'' }"##,
            ),
            source("b.rs", &["b"], "pub use crate::c::*; pub(crate) fn h() {}"),
            source("c.rs", &["c"], "mod deep { pub fn g() {} } mod tests { use super::*; fn t() { crate::c::deep::g(); } }"),
            source("d/mod.rs", &["d"], "pub(crate) mod e; use crate::{b::h, d::e::{self as child, Item}};"),
            source("d/e.rs", &["d", "e"], "macro_rules! m { () => { $crate::Root }; } fn root() { crate::main_item() }"),
        ];
        let graph = graph(&files);
        let imports = |name: &str| graph[name].iter().map(String::as_str).collect::<Vec<_>>();
        assert_eq!(imports("main.rs"), Vec::<&str>::new());
        assert_eq!(imports("a.rs"), vec!["b.rs", "c.rs"]);
        assert_eq!(imports("b.rs"), vec!["c.rs"]);
        assert_eq!(imports("c.rs"), Vec::<&str>::new());
        assert_eq!(imports("d/mod.rs"), vec!["b.rs", "d/e.rs"]);
        assert_eq!(imports("d/e.rs"), vec!["main.rs"]);
        assert!(cycles(&graph).is_empty());

        let mut files = files;
        files[2].text.push_str(" fn back() { crate::a::f() }");
        let found = cycles(&super::graph(&files));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].way, ["a.rs", "b.rs", "a.rs"]);
    }
}

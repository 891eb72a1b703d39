//! The fast path must build exactly yaml-rust2's tree whenever it accepts a text.

use super::parse;
use crate::manifest::tree::{self, Kind, Node};

/// Checks one text: if the fast path accepts it, yaml-rust2 must accept it too and build the
/// same tree. Returns whether the fast path accepted.
fn check(text: &str) -> bool {
    let Some(fast) = parse(text) else {
        return false;
    };
    let reference = match tree::parse_yaml(text) {
        Ok(docs) => docs,
        Err(e) => panic!("fast path accepted text yaml-rust2 rejects ({e:?}):\n{text:?}"),
    };
    if fast != reference {
        panic!(
            "fast path and yaml-rust2 disagree on:\n{text:?}\nfast: {}\nyaml: {}",
            dump(&fast),
            dump(&reference)
        );
    }
    true
}

/// A compact rendering of a tree with every position, for failure messages.
fn dump(docs: &[Node]) -> String {
    fn go(n: &Node, out: &mut String) {
        let pos = format!(
            "@{}:{}-{}{}",
            n.line,
            n.col,
            n.last_line,
            if n.flow { "f" } else { "" }
        );
        match &n.kind {
            Kind::Scalar { value, plain } => {
                out.push_str(&format!("{value:?}{}{pos}", if *plain { "" } else { "q" }));
            }
            Kind::Alias => out.push_str(&format!("*{pos}")),
            Kind::Seq(items) => {
                out.push_str(&format!("[{pos} "));
                for i in items {
                    go(i, out);
                    out.push_str(", ");
                }
                out.push(']');
            }
            Kind::Map(entries) => {
                out.push_str(&format!("{{{pos} "));
                for (k, v) in entries {
                    go(k, out);
                    out.push_str(": ");
                    go(v, out);
                    out.push_str(", ");
                }
                out.push('}');
            }
        }
    }
    let mut out = String::new();
    for d in docs {
        go(d, &mut out);
        out.push('\n');
    }
    out
}

/// The shipped template, the manifests of the manifest tests, the documented example and the
/// snapshots.
const KNOWN: &[&str] = &[
    // templates/manifest/port-manifest.yaml
    "\
# codeb port manifest: the single source of truth for ports on this host.
# Install it as /home/codeb/config/port-manifest.yaml (or point CODEB_MANIFEST at it).
# Ranges: system 1-3999, production 4000-4499, staging 4500-4999, PR previews 5000-5999.
version: 1
reserved:                # optional; these four are always reserved
  - {port: 3000, name: nextjs-default}
  - {port: 3102, name: ssot-registry-api}
  - {port: 3103, name: domain-manager-api}
  - {port: 5432, name: postgresql}
projects:
  myapp:
    image: ghcr.io/codeb/myapp
    domain: myapp.example.com
    production: {port: 4001}
    staging: {port: 4500}
previews:
  myapp-pr-123: {project: myapp, pr: 123, port: 5000}
",
    "\
# the team's manifest
version: 1
reserved:                # optional; these four are always reserved
  - {port: 3000, name: nextjs-default}
  - {port: 3102, name: ssot-registry-api}
  - {port: 3103, name: domain-manager-api}
  - {port: 5432, name: postgresql}
projects:
  myapp:
    image: ghcr.io/codeb/myapp
    production: {port: 4001}
    staging: {port: 4500}
previews:
  myapp-pr-123: {project: myapp, pr: 123, port: 5000}
",
    "\
version: 1
reserved:                # optional; ALWAYS_RESERVED are reserved regardless
  - {port: 3000, name: nextjs-default}
projects:
  myapp:
    production: {port: 4001}
    staging: {port: 4500}
previews:
  myapp-pr-123: {project: myapp, pr: 123, port: 5000}
",
    "\
# the team's manifest
version: 1
reserved:                # optional; these four are always reserved
  - {port: 3000, name: nextjs-default}
  - {port: 3102, name: ssot-registry-api}
  - {port: 3103, name: domain-manager-api}
  - {port: 5432, name: postgresql}
projects:
  myapp:
    image: ghcr.io/codeb/myapp
    production: {port: 4001}
    staging: {port: 4500}
  other:
    staging: {port: 4501}
previews:
  myapp-pr-123: {project: myapp, pr: 123, port: 5000}
",
    "\
# codeb port manifest: the single source of truth for ports on this host.
# Ranges: production 4000-4499, staging 4500-4999, preview 5000-5999.
version: 1
projects:
  a:
    production: {port: 4000}
    staging: {port: 4500}
",
    "version: 1\nprojects:\n  myapp:\n    production: {prot: 4001}\n",
    "version: 1\nprojects:\n  MyApp:\n    production: {port: 4001}\n",
    "version: 1\nprojects:\n  a:\n    production: {port: abc}\n",
    "version: 1\nprojects:\n  a:\n    production: {port: 70000}\n",
    "version: 1\nprojects:\n  a:\n    production: {port: 4001}\n    production: {port: 4002}\n",
    "version: 2\n",
    "projects: {}\n",
    "",
    "version: 1\nextra: 1\n",
    "version: 1\npreviews:\n  a-pr-1: {project: a, port: 5000}\n",
    "\
version: 1
projects:
  a:
    production: {port: 4600}
    staging: {port: 4500}
  b:
    production: {port: 3000}
  c:
    staging: {port: 4500}
previews:
  a-pr-7: {project: a, pr: 7, port: 5432}
  wrong: {project: a, pr: 8, port: 5001}
",
    "version: 1\nprojects:\n  web:\n    production:\n      port: 4003 # main site\n  api:\n    staging: {port: 4502}\n",
    "version: 1\nprojects:\n  web:\n    production:\n      port: 4003 # main site\n    staging: {port: 4503}\n  api:\n    staging: {port: 4502}\n",
    "version: 1\nprojects: {}\npreviews: {}\n",
    "version: 1\nprojects:\npreviews:\n",
    "version: 1\n",
    "version: 1\nprojects: {} # none yet\n",
    "version: 1\nprojects: # none yet\n  a:\n    production: {port: 4000}\n",
    "a:\n  b: {c: 1}\n  d:\n    - 2\n    - 3\n",
];

/// Hand-written edge cases inside the subset.
const EDGES: &[&str] = &[
    // Comments everywhere, at every indentation.
    "# top\n  # indented\nversion: 1 # one\n# between\nprojects: # p\n    # deep\n  a: # a\n  # same\n    production: {port: 4000} # x\n# end\n",
    // Four-space indentation, and one space.
    "version: 1\nprojects:\n    a:\n        production: {port: 4000}\n        staging: {port: 4500}\n    b: {}\n",
    "version: 1\nprojects:\n a:\n  production: {port: 4000}\n b:\n  staging: {port: 4500}\n",
    // Mixed steps at different depths.
    "a:\n   b:\n    c: 1\n   d: 2\ne: 3\n",
    // Nested block slots.
    "version: 1\nprojects:\n  a:\n    production:\n      port: 4001\n      domain: a.example.com\n    staging:\n      port: 4501\n",
    // Empty flow maps and lists, spaced oddly.
    "a: {}\nb: { }\nc: {  a: b  ,c: d }\nd: []\ne: {a: b,c: d}\n",
    // Null sections: at the end of a map, before a dedent, at the end of the file.
    "version: 1\nprojects:\npreviews:\n",
    "version: 1\nprojects:\n  a:\n  b:\n# c\n\nprevious:\n",
    "a:\n  b:\n    c:\n\n# trailing\n",
    "a:\n  b:\n    c:\nd:\n",
    "a:\n  b:\n    c:",
    "a:\n  b:\n    c:   ",
    "a:\n  b:\n    c:\n  # comment at the end",
    "a:\n  b:\n    c: # c\n\n\n   \n",
    "a: null\nb: NULL\nc: Null\n",
    // Trailing spaces, no final newline, value followed by spaces and a comment.
    "version: 1   \nprojects:   \n  a:  \n    production: {port: 4000}   ",
    "key:   value  # c\nother: x  #  z\n",
    "key: value",
    // Colons inside block values, spaces inside block values.
    "image: ghcr.io/org/app:tag\nurl: http://example.com:8080/x\ndescription: My app, v2\n",
    "description: my app v2  # spaces inside\nname: a - b\nlist: x, y\n",
    // Lists: indented, indentless, of scalars, of flow maps, of empty collections.
    "reserved:\n  - {port: 3000, name: nextjs-default}\n  - {port: 3102, name: ssot-registry-api, description: api}\n",
    "reserved:\n- {port: 3000, name: a}\n- {port: 3001, name: b}\nprojects: {}\n",
    "a:\n  b:\n  - x\n  - y\n  c: 1\n",
    "- a\n- b\n-   c\n- {}\n- []\n",
    "a:\n  -   {x: y}\n  - 1\n",
    // Unusual but plain scalars.
    "a: 1.5\nb: true\nc: /root/path\nd: a@b+c\ne: 0x1F\nf: 1e3\ng: _x\n",
    "a: {x: 1.5, y: true, z: /p, w: a@b, v: 1-2}\n",
    // Duplicate keys are for the conversion to report.
    "a: 1\na: 2\nb:\n  c: {d: 1, d: 2}\n",
    // Indented root.
    "  a: 1\n  b:\n    c: 2\n",
    // Comment lines only, blank text.
    "# only a comment\n",
    "\n\n   \n",
    "# a\n# b",
    // Unicode in comments.
    "a: 1 # caf\u{e9} \u{2713}\nb: 2\n# \u{1f600}",
    "a:\n  b: # caf\u{e9}",
    // The end of the text left of the last block.
    "a:\n  b:\n ",
    "a:\n  b:\n    c:\n  ",
    "a:\n  b:\n    c:\n   # x",
    "a:\n  b:\n    c:\n      # x",
    "a:\n  b:\n    c:\n#",
    "a:\n  b:\n  - {x: y}\n ",
    "a:\n  b:\n  - {x: y}\n   ",
    "a:\n  b:\n  - {x: y}",
    "a:\n  b:\n  - {x: y}\n",
    "a:\n- {x: y}\n",
    "a:\n- []\n- x\nb: 1\n",
    "a:\n- x\n- {}\nb: 1\n",
];

#[test]
fn known_manifests_take_the_fast_path_and_agree() {
    for text in KNOWN.iter().chain(EDGES) {
        assert!(check(text), "the fast path refused:\n{text}");
    }
}

/// Inputs outside the subset: the fast path must leave them to yaml-rust2.
#[test]
fn outside_the_subset_is_refused() {
    let cases: &[&str] = &[
        // Quotes.
        "a: \"x\"\n",
        "a: 'x'\n",
        "\"a\": x\n",
        "a: {b: \"c\"}\n",
        "a: it's\n",
        // Anchors, aliases, tags.
        "a: &x 1\nb: *x\n",
        "a: &x {b: 1}\n",
        "a: !!str 1\n",
        "a: !t x\n",
        // Tabs and carriage returns.
        "a:\t1\n",
        "a:\n\tb: 1\n",
        "a: 1 # tab\there\n",
        "a: 1\r\nb: 2\r\n",
        "a: 1\r",
        // Documents and directives.
        "---\na: 1\n",
        "a: 1\n---\nb: 2\n",
        "a: 1\n...\n",
        "%YAML 1.2\n---\na: 1\n",
        // Block scalars and multi-line scalars.
        "a: |\n  text\n",
        "a: >\n  text\n",
        "a: b\n  c\n",
        "- a\n  b\n",
        "a:\n  b\n  c\n",
        // Multi-line or nested flow collections, flow sequences.
        "a: {b: 1,\n  c: 2}\n",
        "a: {b: {c: 1}}\n",
        "a: [1, 2]\n",
        "a: [ ]\n",
        "- [a]\n",
        "{a: 1}\n",
        "[a, b]\n",
        "a: {b: 1} c\n",
        "a: {b: 1,}\n",
        "a: {b:1}\n",
        "a: {b}\n",
        "a: {b: }\n",
        "a: {b: c d}\n",
        "a: {b: c:d}\n",
        // Explicit keys, odd keys and values.
        "? a\n: b\n",
        "a: ? b\n",
        "a : b\n",
        "a:b\n",
        "a: b: c\n",
        "a: b:\n",
        "a: b#c\n",
        "a: -1\n",
        "a: -\n",
        "a: ~\n",
        "-a: b\n",
        ".a: b\n",
        "a b: c\n",
        "a: @x\n",
        "a: `x`\n",
        "a: %x\n",
        "a: =x\n",
        "a: ,x\n",
        // Lists that hold block content or nothing.
        "- a: 1\n",
        "- a: 1\n  b: 2\n",
        "-\n",
        "- - a\n",
        "a:\n  -\n",
        // Indentation that does not come back to an enclosing level, or mixes kinds.
        "a:\n    b: 1\n  c: 2\n",
        "a:\n  b: 1\n c: 2\n",
        "  a: 1\nb: 2\n",
        "a: 1\n  b: 2\n",
        "a:\n  - x\n  b: 1\n",
        "a: 1\n- b\n",
        "- a\nb: 1\n",
        // Other odd bytes.
        "\u{feff}a: 1\n",
        "a: caf\u{e9}\n",
        "a: 1 # \u{85}\n",
        "a: 1 # \u{2028}\n",
        "a: 1\u{0}\n",
    ];
    for text in cases {
        assert!(
            parse(text).is_none(),
            "the fast path should refuse {text:?}, built {}",
            parse(text).map(|d| dump(&d)).unwrap_or_default()
        );
        // Whatever yaml-rust2 makes of it, the full parser still gives its answer.
        assert_eq!(tree::parse(text), tree::parse_yaml(text), "{text:?}");
    }
    let long = format!("a: {}\n", "x".repeat(600));
    assert!(parse(&long).is_none());
}

#[test]
fn syntax_errors_still_come_from_yaml_rust2() {
    for text in ["a: [1, 2\nb: 3\n", "a: {b: 1\n", "a:\n  b: 1\n c: 2\n"] {
        assert!(parse(text).is_none(), "{text:?}");
        assert!(tree::parse(text).is_err(), "{text:?}");
    }
}

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("small")
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

/// Writes lines with random decoration that stays inside the subset: blank lines, comment
/// lines at any indentation, trailing spaces and trailing comments.
struct Writer<'r> {
    rng: &'r mut Rng,
    out: String,
}

impl Writer<'_> {
    fn noise(&mut self) {
        while self.rng.chance(15) {
            if self.rng.chance(50) {
                let pad = " ".repeat(self.rng.below(3));
                self.out.push_str(&pad);
            } else {
                let pad = " ".repeat(self.rng.below(9));
                let text = self.rng.pick(COMMENTS);
                self.out.push_str(&format!("{pad}#{text}"));
            }
            self.out.push('\n');
        }
    }

    fn line(&mut self, indent: usize, code: &str) {
        self.noise();
        self.out.push_str(&" ".repeat(indent));
        self.out.push_str(code);
        if self.rng.chance(10) {
            let pad = " ".repeat(self.rng.below(3));
            self.out.push_str(&pad);
        }
        if self.rng.chance(15) {
            let pad = " ".repeat(1 + self.rng.below(4));
            let text = self.rng.pick(COMMENTS);
            self.out.push_str(&format!("{pad}#{text}"));
        }
        self.out.push('\n');
    }

    fn finish(mut self) -> String {
        self.noise();
        if self.rng.chance(20) {
            // No final newline (perhaps leaving trailing spaces or a comment last).
            self.out.pop();
        }
        self.out
    }
}

const COMMENTS: &[&str] = &[
    "",
    " comment",
    " a: b # c",
    "#",
    " \"quoted\" 'and' &anchors *aliases [x] {y}",
    " caf\u{e9}",
    "- x",
];
const WORDS: &[&str] = &[
    "a", "b", "port", "name", "app", "my-app", "x_1", "app.v2", "a@b", "a+b", "1", "42", "4001",
    "true", "null", "Null", "1.5", "1e3", "0x1F", "_x",
];
const BLOCK_VALUES: &[&str] = &[
    "ghcr.io/org/app:tag",
    "http://example.com:8080/x",
    "/root/path",
    "my app v2",
    "a - b",
    "a  b",
    "a:b:c",
];

fn flow_map(rng: &mut Rng) -> String {
    let n = rng.below(4);
    if n == 0 {
        return rng.pick(&["{}", "{ }", "{  }"]).to_owned();
    }
    let sp = |rng: &mut Rng| " ".repeat(usize::from(rng.chance(20)));
    let mut s = String::from("{");
    s.push_str(&sp(rng));
    for i in 0..n {
        if i > 0 {
            s.push_str(&sp(rng));
            s.push(',');
            s.push(' ');
            s.push_str(&sp(rng));
        }
        s.push_str(rng.pick(WORDS));
        s.push_str(": ");
        s.push_str(&sp(rng));
        s.push_str(rng.pick(WORDS));
    }
    s.push_str(&sp(rng));
    s.push('}');
    s
}

fn inline_value(rng: &mut Rng) -> String {
    match rng.below(10) {
        0..=2 => flow_map(rng),
        3 => "[]".to_owned(),
        4 | 5 => rng.pick(BLOCK_VALUES).to_owned(),
        _ => rng.pick(WORDS).to_owned(),
    }
}

/// A random block collection inside the subset at `indent`.
fn block(w: &mut Writer<'_>, indent: usize, depth: usize) {
    let step = 1 + w.rng.below(4);
    let entries = 1 + w.rng.below(4);
    if w.rng.chance(25) {
        for _ in 0..entries {
            let code = format!("-{}{}", " ".repeat(1 + w.rng.below(2)), inline_value(w.rng));
            w.line(indent, &code);
        }
        return;
    }
    for _ in 0..entries {
        let key = w.rng.pick(WORDS);
        match w.rng.below(10) {
            0..=4 => {
                let spaces = " ".repeat(1 + usize::from(w.rng.chance(20)));
                let code = format!("{key}:{spaces}{}", inline_value(w.rng));
                w.line(indent, &code);
            }
            5 | 6 if depth < 5 => {
                w.line(indent, &format!("{key}:"));
                block(w, indent + step, depth + 1);
            }
            7 => {
                // An indentless list.
                w.line(indent, &format!("{key}:"));
                for _ in 0..1 + w.rng.below(3) {
                    let code = format!("- {}", inline_value(w.rng));
                    w.line(indent, &code);
                }
            }
            _ => w.line(indent, &format!("{key}:")),
        }
    }
}

/// A random manifest of the documented shape, with the variations people write.
fn manifest(rng: &mut Rng) -> String {
    let step = 1 + rng.below(4);
    let top = if rng.chance(10) { 1 + rng.below(2) } else { 0 };
    let mut w = Writer {
        rng,
        out: String::new(),
    };
    w.line(top, "version: 1");
    match w.rng.below(4) {
        0 => {}
        1 => w.line(top, "reserved:"),
        _ => {
            w.line(top, "reserved:");
            let ind = if w.rng.chance(20) { top } else { top + step };
            for i in 0..1 + w.rng.below(4) {
                let code = format!("- {{port: {}, name: svc-{i}}}", 3000 + i);
                w.line(ind, &code);
            }
        }
    }
    match w.rng.below(5) {
        0 => {}
        1 => w.line(top, "projects:"),
        2 => w.line(top, "projects: {}"),
        _ => {
            w.line(top, "projects:");
            let p = top + step;
            for i in 0..1 + w.rng.below(6) {
                match w.rng.below(5) {
                    0 => w.line(p, &format!("app{i}:")),
                    1 => w.line(p, &format!("app{i}: {{}}")),
                    _ => {
                        w.line(p, &format!("app{i}:"));
                        let f = p + step;
                        if w.rng.chance(30) {
                            w.line(f, &format!("image: ghcr.io/org/app{i}:v{i}"));
                        }
                        if w.rng.chance(20) {
                            w.line(f, "description: the app, with spaces");
                        }
                        for env in ["production", "staging"] {
                            match w.rng.below(4) {
                                0 => {}
                                1 => {
                                    w.line(f, &format!("{env}:"));
                                    let s = f + step;
                                    w.line(s, &format!("port: {}", 4000 + i));
                                    if w.rng.chance(50) {
                                        w.line(s, "domain: app.example.com");
                                    }
                                }
                                _ => {
                                    let code = format!("{env}: {{port: {}}}", 4000 + i);
                                    w.line(f, &code);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    match w.rng.below(4) {
        0 => {}
        1 => w.line(top, "previews:"),
        _ => {
            w.line(top, "previews:");
            for i in 0..1 + w.rng.below(4) {
                let code = format!("app-pr-{i}: {{project: app, pr: {i}, port: {}}}", 5000 + i);
                w.line(top + step, &code);
            }
        }
    }
    w.finish()
}

/// A random tree-shaped document inside the subset.
fn random_tree(rng: &mut Rng) -> String {
    let indent = if rng.chance(10) { rng.below(3) } else { 0 };
    let mut w = Writer {
        rng,
        out: String::new(),
    };
    block(&mut w, indent, 0);
    w.finish()
}

/// Lines outside the subset, to splice into valid texts.
const FOREIGN: &[&str] = &[
    "a: \"q\"",
    "a: 'q'",
    "a: &x 1",
    "a: *x",
    "a: !!str 1",
    "a: |\n  text",
    "a: >-\n  text\n  more",
    "? a\n: b",
    "a: [x, y]",
    "a: {b: {c: d}}",
    "a: {b: c,\n  d: e}",
    "---",
    "...",
    "%YAML 1.2",
    "a:\tb",
    "a: b\r",
    "a: b: c",
    "a:b",
    "- - a",
    "-",
    "a: b\n  continued",
    "a: {b: c} d",
    "a: {b:c}",
    "a: {b: c,}",
    "a : b",
    "a: b#c",
    "a: ~",
    "- a: b",
    "a: [ ]",
    "{a: b}",
    "a: @b",
    "a: b, c",
];

/// Mutates `text` once: splices a foreign line, or inserts, deletes or replaces a byte.
fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    match rng.below(5) {
        0 => {
            let at = rng.below(lines.len() + 1);
            let indent = " ".repeat(rng.below(5));
            lines.insert(at, format!("{indent}{}", rng.pick(FOREIGN)));
            lines.join("\n")
        }
        1 => {
            // Re-indent one line.
            let at = rng.below(lines.len());
            let l = lines[at].trim_start().to_owned();
            lines[at] = format!("{}{l}", " ".repeat(rng.below(7)));
            lines.join("\n")
        }
        _ => {
            const ALPHABET: &[char] = &[
                ' ', ' ', ' ', ' ', '\n', '\n', ':', ':', '-', '#', '{', '}', '[', ']', ',', 'a',
                '1', '.', '\t', '\r', '\'', '"', '&', '*', '!', '|', '>', '?', '%', '@', '`', '~',
                '\u{e9}',
            ];
            let mut chars: Vec<char> = text.chars().collect();
            let at = rng.below(chars.len() + 1);
            let c = ALPHABET[rng.below(ALPHABET.len())];
            match rng.below(3) {
                0 => chars.insert(at, c),
                1 if at < chars.len() => {
                    chars.remove(at);
                }
                _ if at < chars.len() => chars[at] = c,
                _ => chars.push(c),
            }
            chars.into_iter().collect()
        }
    }
}

#[test]
fn generated_texts_agree_with_yaml_rust2() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut valid = Vec::new();
    for _ in 0..1500 {
        let text = manifest(&mut rng);
        assert!(check(&text), "the fast path refused a manifest:\n{text}");
        valid.push(text);
    }
    for _ in 0..1500 {
        let text = random_tree(&mut rng);
        assert!(check(&text), "the fast path refused:\n{text}");
        valid.push(text);
    }
    // Mutations: inside or outside the subset, whatever the fast path accepts must agree.
    let (mut accepted, mut refused) = (0, 0);
    for text in valid
        .iter()
        .map(String::as_str)
        .chain(KNOWN.iter().copied())
        .chain(EDGES.iter().copied())
    {
        let mut m = text.to_string();
        for _ in 0..3 {
            m = mutate(&mut rng, &m);
            if check(&m) {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
    }
    assert!(accepted > 1000 && refused > 1000, "{accepted} / {refused}");
}

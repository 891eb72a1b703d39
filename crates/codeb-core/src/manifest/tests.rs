use super::*;

const EXAMPLE: &str = "\
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
";

fn name(s: &str) -> ProjectName {
    ProjectName::new(s).expect("valid test name")
}

fn target(p: &str, env: Environment, pr: Option<u64>) -> Target {
    Target::new(name(p), env, pr).expect("valid target")
}

fn parse(text: &str) -> Document {
    Document::parse(text).unwrap_or_else(|e| panic!("parse failed: {e:?}"))
}

fn errors(text: &str) -> Vec<ParseError> {
    match Document::parse(text) {
        Ok(_) => panic!("expected parse errors for:\n{text}"),
        Err(e) => e,
    }
}

fn free(_: &Assignment) -> PortUse {
    PortUse::Free
}

#[test]
fn parses_the_documented_shape() {
    let doc = parse(EXAMPLE);
    let m = &doc.manifest;
    assert_eq!(m.version, 1);
    assert_eq!(m.reserved.len(), 4);
    let app = &m.projects[&name("myapp")];
    assert_eq!(
        app.production.as_ref().map(|s| (s.port, s.line)),
        Some((4001, 11))
    );
    assert_eq!(app.staging.as_ref().map(|s| s.port), Some(4500));
    assert_eq!(
        app.fields,
        vec![("image".into(), "ghcr.io/codeb/myapp".into())]
    );
    assert_eq!(m.previews["myapp-pr-123"].port, 5000);
    assert_eq!(m.previews["myapp-pr-123"].line, 14);
    assert!(m.validate(Scope::All, &mut free).is_empty());
}

#[test]
fn structural_errors_name_their_line() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "version: 1\nprojects:\n  myapp:\n    production: {prot: 4001}\n",
            4,
            "unknown key `prot`",
        ),
        (
            "version: 1\nprojects:\n  MyApp:\n    production: {port: 4001}\n",
            3,
            "contains 'M'",
        ),
        (
            "version: 1\nprojects:\n  a:\n    production: {port: abc}\n",
            4,
            "whole number",
        ),
        (
            "version: 1\nprojects:\n  a:\n    production: {port: 70000}\n",
            4,
            "not a TCP port",
        ),
        (
            "version: 1\nprojects:\n  a:\n    production: {port: \"4001\"}\n",
            4,
            "whole number",
        ),
        (
            "version: 1\nprojects:\n  a:\n    production: {port: 4001}\n    production: {port: 4002}\n",
            5,
            "duplicate key",
        ),
        ("version: 1\nprojects: [a, b]\n", 2, "must be a mapping"),
        ("version: 2\n", 1, "not supported"),
        ("projects: {}\n", 1, "no `version`"),
        ("", 1, "empty"),
        (
            "version: 1\nprojects:\n  a: {production: {port: 4001}\n",
            4,
            "invalid YAML",
        ),
        ("version: 1\nextra: 1\n", 2, "unknown key `extra`"),
        (
            "version: 1\npreviews:\n  a-pr-1: {project: a, port: 5000}\n",
            3,
            "needs `pr`",
        ),
        (
            "version: 1\nprojects:\n  a:\n    production: {port: 4001}\n  b: &x {production: {port: 4002}}\n  c: *x\n",
            6,
            "aliases",
        ),
    ];
    for (text, line, needle) in cases {
        let errs = errors(text);
        assert!(
            errs.iter()
                .any(|e| e.line == *line && e.message.contains(needle)),
            "expected an error on line {line} containing {needle:?} for:\n{text}\ngot: {errs:?}"
        );
    }
}

#[test]
fn every_problem_is_found_with_its_line() {
    let text = "\
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
";
    let doc = parse(text);
    let problems = doc.manifest.validate(Scope::All, &mut free);
    let got: Vec<(ProblemKind, usize)> = problems.iter().map(|p| (p.kind, p.line)).collect();
    assert!(got.contains(&(ProblemKind::OutOfRange, 4)), "{got:?}");
    assert!(got.contains(&(ProblemKind::OutOfRange, 7)), "{got:?}");
    assert!(got.contains(&(ProblemKind::Reserved, 7)), "{got:?}");
    assert!(got.contains(&(ProblemKind::Duplicate, 9)), "{got:?}");
    assert!(got.contains(&(ProblemKind::Reserved, 11)), "{got:?}");
    assert!(got.contains(&(ProblemKind::Inconsistent, 12)), "{got:?}");
    let dup = problems
        .iter()
        .find(|p| p.kind == ProblemKind::Duplicate)
        .expect("duplicate");
    assert!(
        dup.message.contains("a staging (line 5)"),
        "{}",
        dup.message
    );

    // Scoped to one target, only its own problems are reported: a staging shares 4500 with c.
    let t = target("a", Environment::Staging, None);
    let scoped = doc.manifest.validate(Scope::Target(&t), &mut free);
    assert_eq!(scoped.len(), 1, "{scoped:?}");
    assert_eq!(scoped[0].kind, ProblemKind::Duplicate);
    assert_eq!(scoped[0].line, 5);
}

#[test]
fn host_use_is_a_problem_unless_own() {
    let doc = parse(EXAMPLE);
    let mut host = |a: &Assignment| match a.port {
        4001 => PortUse::Busy("nginx (pid 42)".into()),
        4500 => PortUse::Own,
        _ => PortUse::Free,
    };
    let problems = doc.manifest.validate(Scope::All, &mut host);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].kind, ProblemKind::InUse);
    assert!(problems[0].message.contains("nginx (pid 42)"));
}

#[test]
fn missing_target_says_how_to_fix() {
    let doc = parse(EXAMPLE);
    let t = target("other", Environment::Production, None);
    let p = doc.manifest.validate(Scope::Target(&t), &mut free);
    assert_eq!(p[0].kind, ProblemKind::Missing);
    assert!(p[0].message.contains("--allocate"));
}

#[test]
fn allocation_skips_assigned_reserved_and_busy_ports() {
    let doc = parse(EXAMPLE);
    let t = target("next", Environment::Production, None);
    assert_eq!(doc.manifest.allocate(&t, &mut |_| true), Ok(4000));
    assert_eq!(doc.manifest.allocate(&t, &mut |p| p != 4000), Ok(4002));
    let pv = target("myapp", Environment::Preview, Some(9));
    // 5000 is taken by the existing preview.
    assert_eq!(doc.manifest.allocate(&pv, &mut |_| true), Ok(5001));
    // 5432 (postgresql) is reserved even though it lies inside the preview range.
    let mut busy_below = |p: u16| p >= 5430;
    assert_eq!(doc.manifest.allocate(&pv, &mut busy_below), Ok(5430));
    let mut only_5432 = |p: u16| p == 5432;
    assert!(matches!(
        doc.manifest.allocate(&pv, &mut only_5432),
        Err(AllocError::PoolExhausted { .. })
    ));
}

#[test]
fn insertion_keeps_comments_and_layout() {
    let doc = parse(EXAMPLE);
    let t = target("other", Environment::Staging, None);
    let text = doc.with_port(&t, 4501).expect("edit");
    assert!(text.starts_with("# the team's manifest\n"));
    assert!(text.contains("reserved:                # optional"));
    insta::assert_snapshot!("insert_new_project", text);

    let t = target("myapp", Environment::Preview, Some(124));
    let text = parse(&text).with_port(&t, 5001).expect("edit");
    assert!(text.contains("  myapp-pr-124: {project: myapp, pr: 124, port: 5001}\n"));
    let back = parse(&text);
    assert_eq!(back.manifest.previews.len(), 2);
}

#[test]
fn insertion_into_existing_block_project() {
    let text = "version: 1\nprojects:\n  web:\n    production:\n      port: 4003 # main site\n  api:\n    staging: {port: 4502}\n";
    let doc = parse(text);
    let out = doc
        .with_port(&target("web", Environment::Staging, None), 4503)
        .expect("edit");
    assert_eq!(
        out,
        "version: 1\nprojects:\n  web:\n    production:\n      port: 4003 # main site\n    staging: {port: 4503}\n  api:\n    staging: {port: 4502}\n"
    );
}

#[test]
fn insertion_into_empty_sections() {
    for text in [
        "version: 1\nprojects: {}\npreviews: {}\n",
        "version: 1\nprojects:\npreviews:\n",
        "version: 1\n",
        "version: 1\nprojects: {} # none yet\n",
    ] {
        let doc = parse(text);
        let out = doc
            .with_port(&target("a", Environment::Production, None), 4000)
            .expect("edit");
        let back = parse(&out);
        assert_eq!(
            back.manifest.projects[&name("a")]
                .production
                .as_ref()
                .map(|s| s.port),
            Some(4000),
            "{out}"
        );
        let out2 = back
            .with_port(&target("a", Environment::Preview, Some(1)), 5000)
            .expect("edit");
        assert_eq!(
            parse(&out2).manifest.previews["a-pr-1"].port,
            5000,
            "{out2}"
        );
    }
    // Comments survive where a surgical edit was possible.
    let out = parse("version: 1\nprojects: {} # none yet\n")
        .with_port(&target("a", Environment::Production, None), 4000)
        .expect("edit");
    assert_eq!(
        out,
        "version: 1\nprojects: # none yet\n  a:\n    production: {port: 4000}\n"
    );
}

#[test]
fn flow_style_falls_back_to_canonical_render() {
    let text = "{version: 1, projects: {a: {production: {port: 4000}}}}\n";
    let out = parse(text)
        .with_port(&target("a", Environment::Staging, None), 4500)
        .expect("edit");
    insta::assert_snapshot!("canonical_render", out);
}

#[test]
fn already_assigned_is_refused() {
    let doc = parse(EXAMPLE);
    let err = doc
        .with_port(&target("myapp", Environment::Production, None), 4002)
        .expect_err("already has one");
    assert!(matches!(err, EditError::AlreadyAssigned(_)));
}

#[test]
fn canonical_render_roundtrips_odd_strings() {
    let text = "version: 1\nprojects:\n  a:\n    description: \"yes: it's \\\"quoted\\\" # not a comment\"\n    domain: true\n    production: {port: 4000, domain: \"app.example.com\"}\n";
    let m = parse(text).manifest;
    let again = parse(&m.render()).manifest;
    assert_eq!(m.render(), again.render());
    assert_eq!(
        again.projects[&name("a")].fields[0].1,
        "yes: it's \"quoted\" # not a comment"
    );
}

#[test]
fn removing_an_entry_keeps_the_rest_as_written() {
    let doc = parse(EXAMPLE);
    let text = doc
        .without(&target("myapp", Environment::Preview, Some(123)))
        .expect("edit")
        .expect("was there");
    assert_eq!(
        text,
        EXAMPLE.replace(
            "  myapp-pr-123: {project: myapp, pr: 123, port: 5000}\n",
            ""
        )
    );
    let back = parse(&text);
    assert!(back.manifest.previews.is_empty());
    assert!(
        text.contains("reserved:                # optional"),
        "comments survive"
    );
    let text = back
        .without(&target("myapp", Environment::Staging, None))
        .expect("edit")
        .expect("was there");
    assert!(
        !text.contains("4500") && text.contains("production: {port: 4001}"),
        "{text}"
    );
    assert_eq!(
        parse(&text)
            .without(&target("myapp", Environment::Staging, None))
            .expect("edit"),
        None
    );
    // Block-style entries fall back to the canonical form.
    let block = "version: 1\nprojects:\n  a:\n    production:\n      port: 4000\n";
    let text = parse(block)
        .without(&target("a", Environment::Production, None))
        .expect("edit")
        .expect("was there");
    assert!(
        !parse(&text).manifest.projects.contains_key(&name("a")),
        "a project left without ports goes: {text}"
    );
}

/// `we project remove` left `alpha:` behind once both its ports were released.
#[test]
fn releasing_a_projects_last_port_removes_its_entry() {
    let text = "version: 1\nprojects:\n  # the shop\n  alpha:\n    production: {port: 4001}\n    staging: {port: 4501}\n  beta:\n    production: {port: 4002}\n";
    let t = parse(text)
        .without(&target("alpha", Environment::Production, None))
        .expect("edit")
        .expect("was there");
    assert!(t.contains("  alpha:\n    staging: {port: 4501}"), "{t}");
    let t = parse(&t)
        .without(&target("alpha", Environment::Staging, None))
        .expect("edit")
        .expect("was there");
    assert_eq!(
        t,
        "version: 1\nprojects:\n  # the shop\n  beta:\n    production: {port: 4002}\n"
    );
    // A project with a descriptive field keeps its entry.
    let with_field =
        "version: 1\nprojects:\n  a:\n    description: shop\n    production: {port: 4000}\n";
    let t = parse(with_field)
        .without(&target("a", Environment::Production, None))
        .expect("edit")
        .expect("was there");
    assert!(parse(&t).manifest.projects.contains_key(&name("a")), "{t}");
}

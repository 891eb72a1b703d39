//! Every example payload of GitHub's (octokit/webhooks, vendored in tests/corpora) parses or is
//! cleanly ignored, with the intents the rules promise; GitHub's signature vectors verify.

use std::path::{Path, PathBuf};

use codeb_github::{Intent, WebhookSecret, interpret, sign, verify};

fn corpus() -> PathBuf {
    // crates/codeb-github → the workspace root → tests/corpora (vendored, see its SOURCE)
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpora/github-webhooks");
    assert!(
        p.is_dir(),
        "the webhook corpus is missing at {}",
        p.display()
    );
    p
}

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn payloads() -> Vec<(String, String, Vec<u8>)> {
    let mut out = Vec::new();
    for event in [
        "pull_request",
        "package",
        "registry_package",
        "workflow_run",
        "push",
        "ping",
    ] {
        let dir = corpus().join(event);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for f in files {
            let name = f.file_name().expect("name").to_string_lossy().into_owned();
            out.push((
                event.to_owned(),
                name,
                std::fs::read(&f).expect("read payload"),
            ));
        }
    }
    out
}

#[test]
fn every_corpus_payload_parses_with_the_promised_intents() {
    let all = payloads();
    assert!(all.len() >= 40, "only {} payloads found", all.len());
    for (event, name, body) in all {
        let i =
            interpret(&event, &body, "preview").unwrap_or_else(|e| panic!("{event}/{name}: {e}"));
        let action = name.split('.').next().unwrap_or_default();
        let kinds: Vec<&str> = i.intents.iter().map(Intent::kind).collect();
        let want: &[&str] = match (event.as_str(), action) {
            ("pull_request", "opened" | "reopened" | "synchronize" | "ready_for_review") => {
                &["ensure_preview"]
            }
            ("pull_request", "closed") => &["destroy_preview"],
            // The corpus labels with `bug`, which is not the approve label.
            _ => &[],
        };
        assert_eq!(kinds, want, "{event}/{name}");
        if kinds.is_empty() {
            assert!(
                i.ignored.is_some(),
                "{event}/{name} ignored without a reason"
            );
        }
        if event == "pull_request" {
            assert_eq!(i.repo.as_deref(), Some("Codertocat/Hello-World"), "{name}");
            assert_eq!(i.pr, Some(2), "{name}");
        }
    }
}

#[test]
fn corpus_labeled_with_the_approve_label_ensures() {
    let body = std::fs::read(corpus().join("pull_request/labeled.payload.json")).expect("read");
    let i = interpret("pull_request", &body, "bug").expect("parses");
    assert_eq!(
        i.intents,
        vec![Intent::EnsurePreview {
            repo: "Codertocat/Hello-World".into(),
            pr: 2,
            head_sha: "ec26c3e57ca3a959ca5aad62de7213c562f8c821".into(),
            fork: false,
            labels: vec!["bug".into()],
            image_tag: None,
            approves: true,
        }]
    );
}

#[test]
fn ghcr_publish_of_a_pr_tag_pulls_and_ensures() {
    let i = interpret(
        "package",
        &fixture("ghcr-package-published-pr-42.json"),
        "preview",
    )
    .expect("parses");
    assert_eq!(i.repo.as_deref(), Some("acme/shop"));
    assert_eq!(i.pr, Some(42));
    assert_eq!(
        i.intents,
        vec![
            Intent::PullImage {
                image: "ghcr.io/acme/shop:pr-42".into()
            },
            Intent::EnsurePreview {
                repo: "acme/shop".into(),
                pr: 42,
                head_sha: "9f2c6a1e0b3d4c5f6a7b8c9d0e1f2a3b4c5d6e7f".into(),
                fork: false,
                labels: vec![],
                image_tag: Some("pr-42".into()),
                approves: false,
            }
        ]
    );
    let i = interpret(
        "registry_package",
        &fixture("ghcr-registry_package-published-main.json"),
        "preview",
    )
    .expect("parses");
    assert_eq!(
        i.intents,
        vec![Intent::PullImage {
            image: "ghcr.io/acme/shop:main".into()
        }]
    );
}

#[test]
fn successful_pull_request_run_ensures_at_the_run_head() {
    let body = fixture("workflow_run-completed-pull_request.json");
    let i = interpret("workflow_run", &body, "preview").expect("parses");
    assert_eq!(
        i.intents,
        vec![Intent::EnsurePreview {
            repo: "acme/shop".into(),
            pr: 42,
            head_sha: "9f2c6a1e0b3d4c5f6a7b8c9d0e1f2a3b4c5d6e7f".into(),
            fork: false,
            labels: vec![],
            image_tag: None,
            approves: false,
        }]
    );
    let mut v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    v["workflow_run"]["conclusion"] = "failure".into();
    let i = interpret("workflow_run", v.to_string().as_bytes(), "preview").expect("parses");
    assert!(i.intents.is_empty());
}

#[test]
fn github_docs_signature_vector() {
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(corpus().join("signature/github-docs-vector.json")).expect("read"),
    )
    .expect("json");
    let secret = WebhookSecret::new(v["secret"].as_str().expect("secret"));
    let payload = v["payload"].as_str().expect("payload").as_bytes();
    let header = v["x_hub_signature_256"].as_str().expect("header");
    assert_eq!(sign(&secret, payload), header);
    assert_eq!(
        verify(
            std::slice::from_ref(&secret),
            Some(header.as_bytes()),
            None,
            payload
        ),
        Ok(0)
    );
    // The SHA-1 signature alone is never enough.
    let sha1 = v["note_sha1_locally_computed_not_in_docs"]
        .as_str()
        .expect("sha1");
    assert!(verify(&[secret], None, Some(sha1.as_bytes()), payload).is_err());
}

#[test]
fn signature_vectors_positive_and_negative() {
    let vectors: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(corpus().join("signature/vectors.json")).expect("read"),
    )
    .expect("json");
    let (mut pos, mut neg) = (0, 0);
    for v in vectors {
        let secret = WebhookSecret::new(v["secret"].as_str().expect("secret"));
        let payload = v["payload"].as_str().expect("payload").as_bytes();
        if let Some(expected) = v["expected"].as_str() {
            assert_eq!(sign(&secret, payload), expected, "{}", v["source"]);
            assert_eq!(
                verify(&[secret], Some(expected.as_bytes()), None, payload),
                Ok(0)
            );
            pos += 1;
        } else {
            let bad = v["expected_invalid_signature"]
                .as_str()
                .expect("negative vector");
            assert!(
                verify(&[secret], Some(bad.as_bytes()), None, payload).is_err(),
                "{} verified",
                v["source"]
            );
            neg += 1;
        }
    }
    assert!(
        pos >= 5 && neg >= 3,
        "{pos} positive, {neg} negative vectors"
    );
}

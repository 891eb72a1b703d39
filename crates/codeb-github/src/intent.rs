//! What a delivery asks codeb to do: event name + raw body → [`Intent`]s.
//!
//! | event | action / condition | intents |
//! |---|---|---|
//! | `pull_request` | `opened`, `reopened`, `synchronize`, `ready_for_review` | `EnsurePreview` |
//! | `pull_request` | `labeled` with the approve label | `EnsurePreview` with `approves` (how a maintainer approves a fork's preview of that head commit) |
//! | `pull_request` | `unlabeled` (the approve label) or `converted_to_draft`, from a fork | `EnsurePreview`: the gate runs again and takes the preview down |
//! | `pull_request` | `closed` (merged or not) | `DestroyPreview` |
//! | `pull_request` | `converted_to_draft`, not a fork | none: the preview stays as it is; the next push refreshes it |
//! | `pull_request` | any other action (`assigned`, `edited`, `labeled` with another label, ...) | none |
//! | `package`, `registry_package` | `published`, a container image with a tag | `PullImage` of `ghcr.io/<owner>/<name>:<tag>`; a tag `pr-<N>` adds `EnsurePreview` for PR N |
//! | `workflow_run` | `completed`, conclusion `success`, run triggered by `pull_request` | `EnsurePreview` for each PR of the run, at the run's head commit |
//! | `ping` and every other event | | none |
//!
//! A preview's head repository differs from the base repository (or is gone) for a fork:
//! `fork` is set and the preview service decides, with `labels`, whether to build it.
//! An `EnsurePreview` from a package event cannot know the PR's labels or whether it comes
//! from a fork (the payload does not say): it carries `fork: false`, no labels and
//! `image_tag`, and `head_sha` is the image's `org.opencontainers.image.revision` label when
//! that is a commit id, else empty. Whoever applies it must look the PR up before trusting it.
//!
//! Values that end up in commands, paths or unit names are validated here: repository
//! names, PR numbers (1..=2^32-1), commit ids (hex), image names and tags (OCI grammar).

use serde::de::DeserializeOwned;

use crate::Intent;
use crate::events::{Envelope, PackageEvent, PullRequestEvent, WorkflowRunEvent};

/// The events codeb acts on (plus `ping`, which is answered and otherwise ignored).
pub const SUPPORTED_EVENTS: &[&str] = &[
    "pull_request",
    "package",
    "registry_package",
    "workflow_run",
];

/// The registry GitHub Packages container images live in.
pub const GHCR: &str = "ghcr.io";

/// Largest PR number accepted; anything bigger is not a GitHub pull request.
pub const MAX_PR: u64 = u32::MAX as u64;

/// Why a payload could not be interpreted. Every variant means: answer 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error(
        "the `{event}` payload is not JSON ({detail}); set the webhook's content type to \
         application/json in GitHub's webhook settings"
    )]
    NotJson { event: String, detail: String },
    #[error("the `{event}` payload does not have the shape GitHub documents: {detail}")]
    WrongShape { event: String, detail: String },
    #[error("the `{event}` payload has an invalid {field} {value:?}: expected {expected}")]
    Invalid {
        event: String,
        field: &'static str,
        value: String,
        expected: &'static str,
    },
}

impl EventError {
    /// A short stable label for metrics (`not_json`, `wrong_shape`, `invalid_field`).
    pub fn reason(&self) -> &'static str {
        match self {
            EventError::NotJson { .. } => "not_json",
            EventError::WrongShape { .. } => "wrong_shape",
            EventError::Invalid { .. } => "invalid_field",
        }
    }
}

/// What a delivery means, with enough context to log and filter it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interpretation {
    /// `repository.full_name`, when the payload names a repository.
    pub repo: Option<String>,
    /// The payload's `action`, when it has one.
    pub action: Option<String>,
    /// The pull request the delivery is about, when there is exactly one.
    pub pr: Option<u64>,
    /// What to do; empty when the delivery is ignored.
    pub intents: Vec<Intent>,
    /// Why nothing is to be done, when `intents` is empty.
    pub ignored: Option<String>,
}

impl Interpretation {
    fn ignore(mut self, why: impl Into<String>) -> Self {
        self.intents.clear();
        self.ignored = Some(why.into());
        self
    }
}

/// The intents of a delivery; see the [module docs](self) for the rules.
pub fn intents(event: &str, body: &[u8], approve_label: &str) -> Result<Vec<Intent>, EventError> {
    interpret(event, body, approve_label).map(|i| i.intents)
}

/// Interprets a delivery of `event` (the `X-GitHub-Event` header) with raw `body`.
/// `approve_label` is the label a maintainer adds to a fork's PR to allow its preview.
pub fn interpret(
    event: &str,
    body: &[u8],
    approve_label: &str,
) -> Result<Interpretation, EventError> {
    match event {
        "pull_request" => pull_request(parse(event, body)?, approve_label),
        "package" | "registry_package" => package(event, parse(event, body)?),
        "workflow_run" => workflow_run(parse(event, body)?),
        _ => {
            let env: Envelope = parse(event, body)?;
            let i = Interpretation {
                repo: env.repository.map(|r| r.full_name),
                action: env.action,
                ..Interpretation::default()
            };
            Ok(if event == "ping" {
                i.ignore("ping: GitHub checks that the webhook reaches codeb")
            } else {
                i.ignore(format!("codeb does not act on `{event}` events"))
            })
        }
    }
}

/// The job key of an image pull: `image:<reference>`.
pub fn image_key(image: &str) -> String {
    format!("image:{image}")
}

fn parse<T: DeserializeOwned>(event: &str, body: &[u8]) -> Result<T, EventError> {
    serde_json::from_slice(body).map_err(|e| {
        let detail = e.to_string();
        let event = event.to_owned();
        match e.classify() {
            serde_json::error::Category::Data => EventError::WrongShape { event, detail },
            _ => EventError::NotJson { event, detail },
        }
    })
}

fn pull_request(ev: PullRequestEvent, approve_label: &str) -> Result<Interpretation, EventError> {
    const E: &str = "pull_request";
    let repo = check_repo(E, &ev.repository.full_name)?;
    let pr = check_pr(E, ev.number)?;
    let i = Interpretation {
        repo: Some(repo.clone()),
        action: Some(ev.action.clone()),
        pr: Some(pr),
        ..Interpretation::default()
    };
    let fork = match &ev.pull_request.head.repo {
        Some(head) => !head.full_name.eq_ignore_ascii_case(&repo),
        None => true,
    };
    let ensure = |i: Interpretation, approves: bool| -> Result<Interpretation, EventError> {
        let head_sha = check_sha(E, &ev.pull_request.head.sha)?;
        let labels = ev
            .pull_request
            .labels
            .iter()
            .map(|l| l.name.clone())
            .collect();
        Ok(Interpretation {
            intents: vec![Intent::EnsurePreview {
                repo: repo.clone(),
                pr,
                head_sha,
                fork,
                labels,
                image_tag: None,
                approves,
            }],
            ..i
        })
    };
    match ev.action.as_str() {
        "opened" | "reopened" | "synchronize" | "ready_for_review" => ensure(i, false),
        "labeled" => match &ev.label {
            Some(l) if l.name == approve_label => ensure(i, true),
            Some(l) => Ok(i.ignore(format!(
                "label `{}` is not the approve label `{approve_label}`",
                l.name
            ))),
            None => Ok(i.ignore("`labeled` without a label")),
        },
        "closed" => Ok(Interpretation {
            intents: vec![Intent::DestroyPreview { repo, pr }],
            ..i
        }),
        "unlabeled" => match &ev.label {
            Some(l) if l.name == approve_label && fork => ensure(i, false),
            Some(l) if l.name == approve_label => Ok(i.ignore(
                "approve label removed from a pull request that is not a fork: nothing to gate",
            )),
            _ => Ok(i.ignore("a label other than the approve label was removed")),
        },
        "converted_to_draft" if fork => ensure(i, false),
        "converted_to_draft" => {
            Ok(i.ignore("converted to draft: the preview stays; the next push refreshes it"))
        }
        other => Ok(i.ignore(format!(
            "pull_request action `{other}` does not change a preview"
        ))),
    }
}

fn package(event: &str, ev: PackageEvent) -> Result<Interpretation, EventError> {
    let repo = ev
        .repository
        .as_ref()
        .map(|r| check_repo(event, &r.full_name))
        .transpose()?;
    let i = Interpretation {
        repo: repo.clone(),
        action: Some(ev.action.clone()),
        ..Interpretation::default()
    };
    if ev.action != "published" {
        return Ok(i.ignore(format!("package action `{}` publishes nothing", ev.action)));
    }
    let p = &ev.package;
    let kind = p.package_type.to_ascii_lowercase();
    if kind != "container" && kind != "docker" {
        return Ok(i.ignore(format!(
            "package type `{}` is not a container image",
            p.package_type
        )));
    }
    let meta = p
        .package_version
        .as_ref()
        .and_then(|v| v.container_metadata.as_ref());
    let tag = meta
        .and_then(|m| m.tag.as_ref())
        .and_then(|t| t.name.as_deref())
        .unwrap_or("");
    if tag.is_empty() {
        return Ok(i.ignore("untagged image push: nothing refers to it"));
    }
    let Some(repo) = repo else {
        return Ok(i.ignore("the package is not linked to a repository"));
    };
    let owner = p.owner.login.to_ascii_lowercase();
    let name = p.name.to_ascii_lowercase();
    check(event, "package owner", &owner, "a GitHub login", is_login)?;
    check(
        event,
        "package name",
        &name,
        "an OCI repository name",
        is_image_name,
    )?;
    check(
        event,
        "image tag",
        tag,
        "an OCI tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127})",
        is_tag,
    )?;
    let image = format!("{GHCR}/{owner}/{name}:{tag}");
    let mut intents = vec![Intent::PullImage { image }];
    let mut pr_of_tag = None;
    if let Some(n) = tag.strip_prefix("pr-").and_then(|n| n.parse::<u64>().ok()) {
        let pr = check_pr(event, n)?;
        pr_of_tag = Some(pr);
        let revision = meta
            .and_then(|m| m.labels.as_ref())
            .and_then(|l| l.revision.as_deref())
            .filter(|r| is_sha(r))
            .unwrap_or("")
            .to_ascii_lowercase();
        intents.push(Intent::EnsurePreview {
            repo: repo.clone(),
            pr,
            head_sha: revision,
            fork: false,
            labels: Vec::new(),
            image_tag: Some(tag.to_owned()),
            approves: false,
        });
    }
    Ok(Interpretation {
        pr: pr_of_tag,
        intents,
        ..i
    })
}

fn workflow_run(ev: WorkflowRunEvent) -> Result<Interpretation, EventError> {
    const E: &str = "workflow_run";
    let repo = check_repo(E, &ev.repository.full_name)?;
    let run = &ev.workflow_run;
    let i = Interpretation {
        repo: Some(repo.clone()),
        action: Some(ev.action.clone()),
        ..Interpretation::default()
    };
    if ev.action != "completed" {
        return Ok(i.ignore(format!("workflow run `{}`, not completed", ev.action)));
    }
    let conclusion = run.conclusion.as_deref().unwrap_or("none");
    if conclusion != "success" {
        return Ok(i.ignore(format!(
            "workflow run concluded `{conclusion}`, not success"
        )));
    }
    if run.event != "pull_request" {
        return Ok(i.ignore(format!(
            "workflow run triggered by `{}`, not pull_request",
            run.event
        )));
    }
    if run.pull_requests.is_empty() {
        return Ok(
            i.ignore("the run lists no pull request (GitHub leaves the list empty for forks)")
        );
    }
    let head_sha = check_sha(E, &run.head_sha)?;
    let fork = match &run.head_repository {
        Some(h) => !h.full_name.eq_ignore_ascii_case(&repo),
        None => false,
    };
    let mut intents = Vec::with_capacity(run.pull_requests.len());
    for p in &run.pull_requests {
        intents.push(Intent::EnsurePreview {
            repo: repo.clone(),
            pr: check_pr(E, p.number)?,
            head_sha: head_sha.clone(),
            fork,
            labels: Vec::new(),
            image_tag: None,
            approves: false,
        });
    }
    let pr = match run.pull_requests.as_slice() {
        [one] => Some(one.number),
        _ => None,
    };
    Ok(Interpretation { pr, intents, ..i })
}

fn check(
    event: &str,
    field: &'static str,
    value: &str,
    expected: &'static str,
    ok: fn(&str) -> bool,
) -> Result<(), EventError> {
    if ok(value) {
        Ok(())
    } else {
        Err(EventError::Invalid {
            event: event.to_owned(),
            field,
            value: value.chars().take(200).collect(),
            expected,
        })
    }
}

fn check_repo(event: &str, full_name: &str) -> Result<String, EventError> {
    check(event, "repository", full_name, "`owner/name`", is_full_name)?;
    Ok(full_name.to_owned())
}

fn check_pr(event: &str, pr: u64) -> Result<u64, EventError> {
    if (1..=MAX_PR).contains(&pr) {
        Ok(pr)
    } else {
        Err(EventError::Invalid {
            event: event.to_owned(),
            field: "pull request number",
            value: pr.to_string(),
            expected: "1 to 4294967295",
        })
    }
}

fn check_sha(event: &str, sha: &str) -> Result<String, EventError> {
    check(event, "commit id", sha, "40 or 64 hex digits", is_sha)?;
    Ok(sha.to_ascii_lowercase())
}

fn is_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// GitHub logins: alphanumerics and single hyphens, 1-39 characters.
fn is_login(s: &str) -> bool {
    (1..=39).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
}

/// `owner/name` as GitHub allows it.
fn is_full_name(s: &str) -> bool {
    let Some((owner, name)) = s.split_once('/') else {
        return false;
    };
    is_login(owner)
        && (1..=100).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

/// OCI distribution repository name components (lowercase), separated by `/`.
fn is_image_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.split('/').all(|c| {
            !c.is_empty()
                && c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
                && c.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
                && c.bytes().all(|b| {
                    b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || b == b'.'
                        || b == b'_'
                        || b == b'-'
                })
        })
}

/// OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn is_tag(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && !s.starts_with(['.', '-'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SHA: &str = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";

    fn pr_event(action: &str, head_repo: Option<&str>) -> serde_json::Value {
        json!({
            "action": action,
            "number": 7,
            "label": {"name": "preview"},
            "pull_request": {
                "number": 7,
                "draft": false,
                "labels": [{"name": "preview"}, {"name": "bug"}],
                "head": {"sha": SHA, "repo": head_repo.map(|r| json!({"full_name": r}))}
            },
            "repository": {"full_name": "acme/app"}
        })
    }

    fn run(v: &serde_json::Value, event: &str) -> Result<Interpretation, EventError> {
        interpret(event, v.to_string().as_bytes(), "preview")
    }

    #[test]
    fn fork_detection() {
        let same = run(&pr_event("opened", Some("acme/app")), "pull_request").expect("parses");
        let fork = run(&pr_event("opened", Some("mallory/app")), "pull_request").expect("parses");
        let gone = run(&pr_event("opened", None), "pull_request").expect("parses");
        let fork_of = |i: &Interpretation| match &i.intents[..] {
            [Intent::EnsurePreview { fork, .. }] => *fork,
            other => panic!("{other:?}"),
        };
        assert!(!fork_of(&same));
        assert!(fork_of(&fork));
        assert!(fork_of(&gone));
    }

    #[test]
    fn labeled_matters_only_with_the_approve_label() {
        let mut v = pr_event("labeled", Some("mallory/app"));
        let i = run(&v, "pull_request").expect("parses");
        assert_eq!(
            i.intents,
            vec![Intent::EnsurePreview {
                repo: "acme/app".into(),
                pr: 7,
                head_sha: SHA.into(),
                fork: true,
                labels: vec!["preview".into(), "bug".into()],
                image_tag: None,
                approves: true,
            }]
        );
        v["label"]["name"] = json!("bug");
        let i = run(&v, "pull_request").expect("parses");
        assert!(i.intents.is_empty());
        assert!(i.ignored.is_some_and(|w| w.contains("approve label")));
    }

    #[test]
    fn closed_destroys_and_draft_is_ignored() {
        let i = run(&pr_event("closed", Some("acme/app")), "pull_request").expect("parses");
        assert_eq!(
            i.intents,
            vec![Intent::DestroyPreview {
                repo: "acme/app".into(),
                pr: 7
            }]
        );
        for action in [
            "converted_to_draft",
            "unlabeled",
            "assigned",
            "edited",
            "no_such_action",
        ] {
            let i = run(&pr_event(action, Some("acme/app")), "pull_request").expect("parses");
            assert!(i.intents.is_empty(), "{action}");
            assert!(i.ignored.is_some(), "{action}");
        }
    }

    #[test]
    fn unlabeled_and_converted_to_draft_regate_a_fork() {
        for action in ["unlabeled", "converted_to_draft"] {
            let i = run(&pr_event(action, Some("mallory/app")), "pull_request").expect("parses");
            match &i.intents[..] {
                [Intent::EnsurePreview { fork, approves, .. }] => {
                    assert!(*fork && !*approves, "{action}");
                }
                other => panic!("{action}: {other:?}"),
            }
        }
        // Removing another label of a fork changes nothing.
        let mut v = pr_event("unlabeled", Some("mallory/app"));
        v["label"]["name"] = json!("bug");
        assert!(run(&v, "pull_request").expect("parses").intents.is_empty());
    }

    #[test]
    fn only_labeled_approves_and_synchronize_does_not() {
        let approves =
            |action: &str| match &run(&pr_event(action, Some("mallory/app")), "pull_request")
                .expect("parses")
                .intents[..]
            {
                [Intent::EnsurePreview { approves, .. }] => *approves,
                other => panic!("{other:?}"),
            };
        assert!(approves("labeled"));
        assert!(!approves("synchronize"));
        assert!(!approves("opened"));
    }

    #[test]
    fn out_of_range_numbers_and_bad_values_are_refused() {
        let mut v = pr_event("opened", Some("acme/app"));
        for (n, reason) in [
            (json!(0), "invalid_field"),
            (json!(4_294_967_296u64), "invalid_field"),
            (json!(u64::MAX), "invalid_field"),
            (json!(1e30), "wrong_shape"),
            (json!(-1), "wrong_shape"),
            (json!("7"), "wrong_shape"),
        ] {
            v["number"] = n.clone();
            let err = run(&v, "pull_request").expect_err("refused");
            assert_eq!(err.reason(), reason, "{n}");
        }
        // Bigger than u64: serde_json sees a float.
        let text = pr_event("opened", Some("acme/app"))
            .to_string()
            .replace("\"number\":7", "\"number\":99999999999999999999999");
        let err = interpret("pull_request", text.as_bytes(), "preview").expect_err("refused");
        assert_eq!(err.reason(), "wrong_shape");

        let mut v = pr_event("opened", Some("acme/app"));
        v["pull_request"]["head"]["sha"] = json!("--upload-pack=evil");
        assert_eq!(
            run(&v, "pull_request").expect_err("refused").reason(),
            "invalid_field"
        );
        let mut v = pr_event("opened", Some("acme/app"));
        v["repository"]["full_name"] = json!("../etc");
        assert_eq!(
            run(&v, "pull_request").expect_err("refused").reason(),
            "invalid_field"
        );
    }

    #[test]
    fn not_json_versus_wrong_shape() {
        for body in [
            &b""[..],
            b"{",
            b"payload=%7B%7D",
            b"\xff\xfe",
            b"{\"action\": \"\xff\"}",
        ] {
            let err = interpret("pull_request", body, "preview").expect_err("refused");
            assert_eq!(err.reason(), "not_json", "{body:?}");
        }
        for body in [&b"[]"[..], b"42", b"{}", b"{\"action\": 1}", b"null"] {
            let err = interpret("pull_request", body, "preview").expect_err("refused");
            assert_eq!(err.reason(), "wrong_shape", "{body:?}");
        }
        // Unknown events still have to be JSON objects.
        assert!(interpret("push", b"[1]", "preview").is_err());
        let i = interpret("push", b"{\"repository\": {\"full_name\": \"a/b\"}}", "p").expect("ok");
        assert_eq!(i.repo.as_deref(), Some("a/b"));
        assert!(i.intents.is_empty());
    }

    #[test]
    fn validators() {
        assert!(is_image_name("app"));
        assert!(is_image_name("team/my-app.web"));
        assert!(!is_image_name("App"));
        assert!(!is_image_name("-app"));
        assert!(!is_image_name("a//b"));
        assert!(is_tag("pr-12"));
        assert!(is_tag("v1.2.3_x"));
        assert!(!is_tag("-x"));
        assert!(!is_tag("a b"));
        assert!(!is_tag(&"a".repeat(129)));
        assert!(is_full_name("Codertocat/Hello-World"));
        assert!(!is_full_name("a/b/c"));
        assert!(!is_full_name("a/.."));
        assert!(!is_login("-a"));
    }
}

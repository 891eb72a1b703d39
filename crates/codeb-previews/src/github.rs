//! The few GitHub REST calls previews need, through octocrab: pull requests, deployments and
//! their statuses, and the one preview comment per pull request (found by its marker and
//! the bot's own login, so a comment someone else wrote with the marker is never edited).

use crate::PreviewError;
use codeb_secret::Secret;
use octocrab::Octocrab;
use serde_json::{Value, json};
use std::time::Duration;

/// Marks the comment codeb edits in place.
pub const COMMENT_MARKER: &str = "<!-- codeb-preview -->";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullInfo {
    pub open: bool,
    pub head_sha: String,
    pub fork: bool,
    pub labels: Vec<String>,
    pub html_url: String,
    pub draft: bool,
}

#[derive(Clone)]
pub struct GitHub {
    oc: Octocrab,
    /// The login codeb's comments are written by: from the config, else `GET /user`.
    login: std::sync::Arc<tokio::sync::OnceCell<String>>,
    configured_login: Option<String>,
}

fn err(what: &str, e: octocrab::Error) -> PreviewError {
    let (detail, status) = match &e {
        octocrab::Error::GitHub { source, .. } => (
            format!("{} ({})", source.message, source.status_code),
            Some(source.status_code.as_u16()),
        ),
        other => (other.to_string(), None),
    };
    PreviewError::GitHub {
        what: what.to_owned(),
        detail,
        status,
    }
}

enum FileError {
    Shape(String),
    Refused(String),
}

/// The text of a contents API answer for one file (`type: file`, base64 `content`).
fn file_text(v: &Value) -> Result<Option<String>, FileError> {
    use base64::Engine;
    match v.get("type").and_then(Value::as_str) {
        Some("file") => {}
        Some(other) => {
            return Err(FileError::Refused(format!("is a {other}, not a file")));
        }
        None => return Err(FileError::Shape("no `type`".into())),
    }
    let encoding = v
        .get("encoding")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if encoding != "base64" {
        return Err(FileError::Refused(format!(
            "GitHub serves it with encoding `{encoding}` (files over 1 MB have no content in the contents API): keep the seed under 1 MB"
        )));
    }
    let content: String = v
        .get("content")
        .and_then(Value::as_str)
        .ok_or_else(|| FileError::Shape("no `content`".into()))?
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(content)
        .map_err(|e| FileError::Shape(format!("`content` is not base64: {e}")))?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| FileError::Refused("is not UTF-8 text".into()))
}

fn unexpected(what: &str, detail: impl Into<String>) -> PreviewError {
    PreviewError::Unexpected {
        what: what.to_owned(),
        detail: detail.into(),
    }
}

impl GitHub {
    pub fn new(
        api_url: &str,
        token: Option<Secret>,
        login: Option<String>,
    ) -> Result<Self, PreviewError> {
        let mut b = Octocrab::builder()
            .base_uri(api_url)
            .map_err(|e| PreviewError::Config(format!("github_api_url `{api_url}`: {e}")))?
            .set_connect_timeout(Some(Duration::from_secs(10)))
            .set_read_timeout(Some(Duration::from_secs(30)));
        if let Some(t) = token {
            b = b.personal_token(t.expose().to_owned());
        }
        let oc = b
            .build()
            .map_err(|e| PreviewError::Config(format!("GitHub client: {e}")))?;
        Ok(Self {
            oc,
            login: Default::default(),
            configured_login: login,
        })
    }

    /// The login of the account the token belongs to (`bot_login` in the config wins: a
    /// GitHub App's installation token cannot read `GET /user`).
    pub async fn login(&self) -> Result<&str, PreviewError> {
        self.login
            .get_or_try_init(|| async {
                if let Some(l) = &self.configured_login {
                    return Ok(l.clone());
                }
                let what =
                    "GET /user (the token's own login; set [previews] bot_login for a GitHub App)";
                let v: Value = self
                    .oc
                    .get("/user", None::<&()>)
                    .await
                    .map_err(|e| err(what, e))?;
                v.get("login")
                    .and_then(Value::as_str)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .ok_or_else(|| unexpected(what, "no `login`"))
            })
            .await
            .map(String::as_str)
    }

    pub async fn pull(&self, repo: &str, pr: u64) -> Result<PullInfo, PreviewError> {
        let what = format!("GET pull request {repo}#{pr}");
        let v: Value = self
            .oc
            .get(format!("/repos/{repo}/pulls/{pr}"), None::<&()>)
            .await
            .map_err(|e| err(&what, e))?;
        pull_info(repo, &v).map_err(|d| unexpected(&what, d))
    }

    /// The text of the file `path` of `repo` at commit `sha` (the contents API), or `None`
    /// when the commit has no such file.
    pub async fn file(
        &self,
        repo: &str,
        path: &str,
        sha: &str,
    ) -> Result<Option<String>, PreviewError> {
        let what = format!("GET {path} of {repo} at {}", crate::short(sha));
        let r: Result<Value, octocrab::Error> = self
            .oc
            .get(
                format!("/repos/{repo}/contents/{path}"),
                Some(&[("ref", sha)]),
            )
            .await;
        let v = match r {
            Ok(v) => v,
            Err(octocrab::Error::GitHub { source, .. }) if source.status_code.as_u16() == 404 => {
                return Ok(None);
            }
            Err(e) => return Err(err(&what, e)),
        };
        file_text(&v).map_err(|d| match d {
            FileError::Shape(d) => unexpected(&what, d),
            FileError::Refused(d) => {
                PreviewError::DataRefused(format!("{path} at {}: {d}", crate::short(sha)))
            }
        })
    }

    /// Numbers of the open pull requests of `repo` (all pages).
    pub async fn open_pulls(&self, repo: &str) -> Result<Vec<u64>, PreviewError> {
        let mut out = Vec::new();
        for page in 1..=50u32 {
            let what = format!("GET open pull requests of {repo}");
            let v: Value = self
                .oc
                .get(
                    format!("/repos/{repo}/pulls"),
                    Some(&json!({"state": "open", "per_page": 100, "page": page})),
                )
                .await
                .map_err(|e| err(&what, e))?;
            // Anything but a list would read as "no open pull requests" and tear every
            // preview down: refuse it.
            let items = v
                .as_array()
                .ok_or_else(|| unexpected(&what, format!("not a list: {}", short(&v))))?;
            for p in items {
                out.push(
                    p.get("number")
                        .and_then(Value::as_u64)
                        .ok_or_else(|| unexpected(&what, "an entry without `number`"))?,
                );
            }
            if items.len() < 100 {
                break;
            }
        }
        Ok(out)
    }

    pub async fn create_deployment(
        &self,
        repo: &str,
        sha: &str,
        environment: &str,
        description: &str,
    ) -> Result<u64, PreviewError> {
        let body = json!({
            "ref": sha,
            "environment": environment,
            "transient_environment": true,
            "production_environment": false,
            "auto_merge": false,
            "required_contexts": [],
            "description": description,
        });
        let v: Value = self
            .oc
            .post(format!("/repos/{repo}/deployments"), Some(&body))
            .await
            .map_err(|e| err(&format!("POST deployment of {repo} {environment}"), e))?;
        v.get("id").and_then(Value::as_u64).ok_or_else(|| {
            unexpected(
                &format!("POST deployment of {repo} {environment}"),
                "no `id`",
            )
        })
    }

    pub async fn deployment_status(
        &self,
        repo: &str,
        id: u64,
        state: &str,
        environment_url: Option<&str>,
        log_url: Option<&str>,
        description: &str,
    ) -> Result<(), PreviewError> {
        let mut body = json!({ "state": state, "description": truncate(description, 140) });
        if let Some(u) = environment_url {
            body["environment_url"] = json!(u);
        }
        if let Some(u) = log_url {
            body["log_url"] = json!(u);
        }
        let _: Value = self
            .oc
            .post(
                format!("/repos/{repo}/deployments/{id}/statuses"),
                Some(&body),
            )
            .await
            .map_err(|e| {
                err(
                    &format!("POST status {state} of deployment {id} in {repo}"),
                    e,
                )
            })?;
        Ok(())
    }

    /// Edits codeb's comment on the pull request, or creates it. Returns its id.
    pub async fn upsert_comment(
        &self,
        repo: &str,
        pr: u64,
        known: Option<u64>,
        text: &str,
    ) -> Result<u64, PreviewError> {
        let body = json!({ "body": format!("{COMMENT_MARKER}\n{text}") });
        let existing = match known {
            Some(id) => Some(id),
            None => self.find_comment(repo, pr).await?,
        };
        if let Some(id) = existing {
            let r: Result<Value, _> = self
                .oc
                .patch(format!("/repos/{repo}/issues/comments/{id}"), Some(&body))
                .await;
            match r {
                Ok(_) => return Ok(id),
                // Deleted by someone: write a new one.
                Err(octocrab::Error::GitHub { source, .. })
                    if source.status_code.as_u16() == 404 => {}
                Err(e) => return Err(err(&format!("PATCH comment {id} in {repo}"), e)),
            }
        }
        let v: Value = self
            .oc
            .post(format!("/repos/{repo}/issues/{pr}/comments"), Some(&body))
            .await
            .map_err(|e| err(&format!("POST comment on {repo}#{pr}"), e))?;
        v.get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| unexpected(&format!("POST comment on {repo}#{pr}"), "no `id`"))
    }

    async fn find_comment(&self, repo: &str, pr: u64) -> Result<Option<u64>, PreviewError> {
        let login = self.login().await?.to_owned();
        for page in 1..=20u32 {
            let what = format!("GET comments of {repo}#{pr}");
            let v: Value = self
                .oc
                .get(
                    format!("/repos/{repo}/issues/{pr}/comments"),
                    Some(&json!({"per_page": 100, "page": page})),
                )
                .await
                .map_err(|e| err(&what, e))?;
            let items = v
                .as_array()
                .ok_or_else(|| unexpected(&what, format!("not a list: {}", short(&v))))?;
            if let Some(id) = items.iter().find_map(|c| ours(c, &login)) {
                return Ok(Some(id));
            }
            if items.len() < 100 {
                break;
            }
        }
        Ok(None)
    }
}

/// The id of `comment` if it is codeb's: it starts with the marker and was written by
/// `login` (anyone can paste the marker into a comment of their own).
pub(crate) fn ours(comment: &Value, login: &str) -> Option<u64> {
    let body = comment.get("body").and_then(Value::as_str)?;
    let author = comment.pointer("/user/login").and_then(Value::as_str)?;
    (body.starts_with(COMMENT_MARKER) && author.eq_ignore_ascii_case(login))
        .then(|| comment.get("id").and_then(Value::as_u64))
        .flatten()
}

fn short(v: &Value) -> String {
    truncate(&v.to_string(), 200)
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

pub(crate) fn pull_info(repo: &str, v: &Value) -> Result<PullInfo, String> {
    let state = v.get("state").and_then(Value::as_str).ok_or("no `state`")?;
    let head_sha = v
        .pointer("/head/sha")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("no `head.sha`")?
        .to_ascii_lowercase();
    // `head.repo` is null when the fork was deleted: treat that as a fork.
    let head_repo = v.pointer("/head/repo/full_name").and_then(Value::as_str);
    let labels = match v.get("labels") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ls)) => ls
            .iter()
            .map(|l| {
                l.get("name")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or("a label without `name`")
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("`labels` is not a list".into()),
    };
    Ok(PullInfo {
        open: state == "open",
        head_sha,
        fork: head_repo.is_none_or(|h| !h.eq_ignore_ascii_case(repo)),
        labels,
        html_url: v
            .get("html_url")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        draft: v.get("draft").and_then(Value::as_bool).unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sticky_comment_needs_the_marker_and_the_bots_login() {
        let c = |body: &str, login: &str| json!({"id": 5, "body": body, "user": {"login": login}});
        let marked = format!("{COMMENT_MARKER}\nPreview ready");
        assert_eq!(ours(&c(&marked, "codeb-bot"), "codeb-bot"), Some(5));
        assert_eq!(ours(&c(&marked, "Codeb-Bot"), "codeb-bot"), Some(5));
        // Someone else pasted the marker: not ours.
        assert_eq!(ours(&c(&marked, "mallory"), "codeb-bot"), None);
        assert_eq!(ours(&c("hello", "codeb-bot"), "codeb-bot"), None);
        assert_eq!(ours(&json!({"id": 5, "body": marked}), "codeb-bot"), None);
    }

    #[test]
    fn pull_info_refuses_what_it_cannot_read() {
        let ok = json!({"state": "open", "head": {"sha": "AB", "repo": {"full_name": "a/b"}}, "labels": [{"name": "preview"}], "draft": true});
        let info = pull_info("a/b", &ok).expect("reads");
        assert!(info.open && !info.fork && info.draft);
        assert_eq!(info.head_sha, "ab");
        assert_eq!(info.labels, vec!["preview".to_owned()]);
        let gone = json!({"state": "open", "head": {"sha": "ab", "repo": null}});
        assert!(pull_info("a/b", &gone).expect("reads").fork);
        for bad in [
            json!({}),
            json!({"state": "open", "head": {"sha": ""}}),
            json!({"state": "open", "head": {"sha": "ab"}, "labels": "preview"}),
            json!([]),
        ] {
            assert!(pull_info("a/b", &bad).is_err(), "{bad}");
        }
    }
}

//! The few GitHub REST calls previews need, through octocrab: pull requests, deployments and
//! their statuses, and the one preview comment per pull request (found by a marker).

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
}

#[derive(Clone)]
pub struct GitHub {
    oc: Octocrab,
}

fn err(what: &str, e: octocrab::Error) -> PreviewError {
    let detail = match &e {
        octocrab::Error::GitHub { source, .. } => {
            format!("{} ({})", source.message, source.status_code)
        }
        other => other.to_string(),
    };
    PreviewError::GitHub(format!("{what}: {detail}"))
}

impl GitHub {
    pub fn new(api_url: &str, token: Option<Secret>) -> Result<Self, PreviewError> {
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
        Ok(Self { oc })
    }

    pub async fn pull(&self, repo: &str, pr: u64) -> Result<PullInfo, PreviewError> {
        let v: Value = self
            .oc
            .get(format!("/repos/{repo}/pulls/{pr}"), None::<&()>)
            .await
            .map_err(|e| err(&format!("GET pull request {repo}#{pr}"), e))?;
        Ok(pull_info(repo, &v))
    }

    /// Numbers of the open pull requests of `repo` (all pages).
    pub async fn open_pulls(&self, repo: &str) -> Result<Vec<u64>, PreviewError> {
        let mut out = Vec::new();
        for page in 1..=50u32 {
            let v: Value = self
                .oc
                .get(
                    format!("/repos/{repo}/pulls"),
                    Some(&json!({"state": "open", "per_page": 100, "page": page})),
                )
                .await
                .map_err(|e| err(&format!("GET open pull requests of {repo}"), e))?;
            let items = v.as_array().cloned().unwrap_or_default();
            out.extend(
                items
                    .iter()
                    .filter_map(|p| p.get("number").and_then(Value::as_u64)),
            );
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
            PreviewError::GitHub(format!("the deployment answer for {repo} has no id: {v}"))
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
        v.get("id").and_then(Value::as_u64).ok_or_else(|| {
            PreviewError::GitHub(format!("the comment answer for {repo}#{pr} has no id"))
        })
    }

    async fn find_comment(&self, repo: &str, pr: u64) -> Result<Option<u64>, PreviewError> {
        for page in 1..=20u32 {
            let v: Value = self
                .oc
                .get(
                    format!("/repos/{repo}/issues/{pr}/comments"),
                    Some(&json!({"per_page": 100, "page": page})),
                )
                .await
                .map_err(|e| err(&format!("GET comments of {repo}#{pr}"), e))?;
            let items = v.as_array().cloned().unwrap_or_default();
            if let Some(id) = items.iter().find_map(|c| {
                c.get("body")
                    .and_then(Value::as_str)
                    .filter(|b| b.starts_with(COMMENT_MARKER))
                    .and(c.get("id").and_then(Value::as_u64))
            }) {
                return Ok(Some(id));
            }
            if items.len() < 100 {
                break;
            }
        }
        Ok(None)
    }
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

pub(crate) fn pull_info(repo: &str, v: &Value) -> PullInfo {
    let head_repo = v.pointer("/head/repo/full_name").and_then(Value::as_str);
    PullInfo {
        open: v.get("state").and_then(Value::as_str) == Some("open"),
        head_sha: v
            .pointer("/head/sha")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        fork: head_repo.is_none_or(|h| !h.eq_ignore_ascii_case(repo)),
        labels: v
            .get("labels")
            .and_then(Value::as_array)
            .map(|ls| {
                ls.iter()
                    .filter_map(|l| l.get("name").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        html_url: v
            .get("html_url")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    }
}

//! The one stand-in of the suite: GitHub's REST API, served by a small real HTTP server that
//! keeps pull requests the test sets up and records deployments, statuses and comments.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

#[derive(Debug, Clone, Default)]
pub struct Pr {
    pub repo: String,
    pub number: u64,
    pub open: bool,
    pub head_sha: String,
    /// `full_name` of the head repository (another one for a fork).
    pub head_repo: String,
    pub labels: Vec<String>,
    pub draft: bool,
}

#[derive(Debug, Clone)]
pub struct Deployment {
    pub id: u64,
    pub repo: String,
    pub body: Value,
    pub statuses: Vec<Value>,
}

#[derive(Debug, Clone)]
pub struct Comment {
    pub id: u64,
    pub repo: String,
    pub pr: u64,
    pub body: String,
    pub edits: usize,
    /// The login that wrote it.
    pub author: String,
}

/// The login the fake's token belongs to (`GET /user`), and so the author of codeb's comments.
pub const BOT_LOGIN: &str = "codeb-bot";

#[derive(Debug, Default)]
pub struct State {
    pub prs: BTreeMap<(String, u64), Pr>,
    pub deployments: Vec<Deployment>,
    pub comments: Vec<Comment>,
    pub requests: Vec<String>,
    /// Actions settings and runners of repositories and organizations (`doctor`).
    pub settings: Settings,
    /// Repositories whose pull request list answers 500.
    pub failing: std::collections::BTreeSet<String>,
    /// Files of commits: (repository, commit, path) -> text (the contents API).
    pub files: BTreeMap<(String, String, String), String>,
    next_id: u64,
}

#[derive(Clone)]
pub struct FakeGitHub {
    pub url: String,
    pub state: Arc<Mutex<State>>,
}

impl FakeGitHub {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!(
            "http://127.0.0.1:{}",
            listener.local_addr().expect("addr").port()
        );
        let state = Arc::new(Mutex::new(State {
            next_id: 1000,
            ..State::default()
        }));
        let s = state.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = s.clone();
                thread::spawn(move || serve(stream, &s));
            }
        });
        Self { url, state }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_pr(&self, pr: Pr) {
        self.lock().prs.insert((pr.repo.clone(), pr.number), pr);
    }

    /// The states of the statuses of deployments for environment `env`, oldest first.
    pub fn statuses(&self, env: &str) -> Vec<String> {
        self.lock()
            .deployments
            .iter()
            .filter(|d| d.body["environment"] == env)
            .flat_map(|d| {
                d.statuses
                    .iter()
                    .map(|s| s["state"].as_str().unwrap_or_default().to_owned())
            })
            .collect()
    }

    pub fn deployments(&self, env: &str) -> Vec<Deployment> {
        self.lock()
            .deployments
            .iter()
            .filter(|d| d.body["environment"] == env)
            .cloned()
            .collect()
    }

    /// A comment someone else wrote on the pull request.
    pub fn add_comment_by(&self, repo: &str, pr: u64, author: &str, body: &str) -> u64 {
        let mut st = self.lock();
        st.next_id += 1;
        let id = st.next_id;
        st.comments.push(Comment {
            id,
            repo: repo.into(),
            pr,
            body: body.into(),
            edits: 0,
            author: author.into(),
        });
        id
    }

    /// The requests received (`METHOD target`) that start with `prefix`.
    pub fn requests_of(&self, prefix: &str) -> Vec<String> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Puts `text` at `path` in commit `sha` of `repo` (served by the contents API).
    pub fn set_file(&self, repo: &str, sha: &str, path: &str, text: &str) {
        self.lock()
            .files
            .insert((repo.into(), sha.into(), path.into()), text.into());
    }

    pub fn comments(&self, repo: &str, pr: u64) -> Vec<Comment> {
        self.lock()
            .comments
            .iter()
            .filter(|c| c.repo == repo && c.pr == pr)
            .cloned()
            .collect()
    }
}

fn serve(stream: TcpStream, state: &Arc<Mutex<State>>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let target = parts.next().unwrap_or_default().to_owned();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let (status, answer) = route(state, &method, &target, &body);
        let text = answer.to_string();
        let reason = if status < 300 { "OK" } else { "Error" };
        if write!(
            out,
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        )
        .is_err()
        {
            return;
        }
    }
}

fn pr_json(p: &Pr) -> Value {
    json!({
        "number": p.number,
        "state": if p.open { "open" } else { "closed" },
        "html_url": format!("https://github.com/{}/pull/{}", p.repo, p.number),
        "head": { "sha": p.head_sha, "ref": "feature", "repo": { "full_name": p.head_repo } },
        "base": { "ref": "main", "repo": { "full_name": p.repo } },
        "labels": p.labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
        "draft": p.draft,
    })
}

fn content_json(repo: &str, reference: &str, path: &str, text: &str) -> Value {
    use base64::Engine;
    use sha2::Digest;
    let b64 = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    let content: String = b64
        .as_bytes()
        .chunks(60)
        .map(|c| format!("{}\n", String::from_utf8_lossy(c)))
        .collect();
    // The fake keeps no git objects: an id of the same form stands for the blob's sha.
    let sha: String = sha2::Sha256::digest(text.as_bytes())
        .iter()
        .take(20)
        .map(|b| format!("{b:02x}"))
        .collect();
    let name = path.rsplit('/').next().unwrap_or(path);
    let api = format!("https://api.github.com/repos/{repo}/contents/{path}?ref={reference}");
    let html = format!("https://github.com/{repo}/blob/{reference}/{path}");
    let git = format!("https://api.github.com/repos/{repo}/git/blobs/{sha}");
    json!({
        "type": "file",
        "encoding": "base64",
        "size": text.len(),
        "name": name,
        "path": path,
        "content": content,
        "sha": sha,
        "url": api,
        "git_url": git,
        "html_url": html,
        "download_url": format!("https://raw.githubusercontent.com/{repo}/{reference}/{path}"),
        "_links": { "git": git, "self": api, "html": html }
    })
}

fn route(state: &Arc<Mutex<State>>, method: &str, target: &str, body: &Value) -> (u16, Value) {
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    st.requests.push(format!("{method} {target}"));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let page: u64 = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("page="))
        .and_then(|p| p.parse().ok())
        .unwrap_or(1);
    let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let Some(answer) = settings_route(&st.settings, method, path, query, &seg) {
        return answer;
    }
    match (method, seg.as_slice()) {
        ("GET", ["user"]) => (200, json!({"login": BOT_LOGIN, "id": 1, "type": "User"})),
        ("GET", ["repos", o, r, "pulls"]) => {
            let repo = format!("{o}/{r}");
            if st.failing.contains(&repo) {
                return (500, json!({"message": "Server Error"}));
            }
            if page > 1 {
                return (200, json!([]));
            }
            let list: Vec<Value> = st
                .prs
                .values()
                .filter(|p| p.repo == repo && p.open)
                .map(pr_json)
                .collect();
            (200, Value::Array(list))
        }
        // "Get repository content" for a file (REST API 2022-11-28): base64 with a line
        // break every 60 characters, as GitHub sends it; 404 when the commit lacks the path.
        ("GET", ["repos", o, r, "contents", rest @ ..]) => {
            let repo = format!("{o}/{r}");
            let path = rest.join("/");
            let reference = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("ref="))
                .unwrap_or("main")
                .to_owned();
            match st
                .files
                .get(&(repo.clone(), reference.clone(), path.clone()))
            {
                Some(text) => (200, content_json(&repo, &reference, &path, text)),
                None => (
                    404,
                    json!({
                        "message": "Not Found",
                        "documentation_url": "https://docs.github.com/rest/repos/contents#get-repository-content",
                        "status": "404"
                    }),
                ),
            }
        }
        ("GET", ["repos", o, r, "pulls", n]) => {
            let key = (format!("{o}/{r}"), n.parse().unwrap_or(0));
            match st.prs.get(&key) {
                Some(p) => (200, pr_json(p)),
                None => (404, json!({"message": "Not Found"})),
            }
        }
        ("POST", ["repos", o, r, "deployments"]) => {
            st.next_id += 1;
            let id = st.next_id;
            st.deployments.push(Deployment {
                id,
                repo: format!("{o}/{r}"),
                body: body.clone(),
                statuses: vec![],
            });
            (201, json!({"id": id, "environment": body["environment"]}))
        }
        ("POST", ["repos", _, _, "deployments", id, "statuses"]) => {
            let id: u64 = id.parse().unwrap_or(0);
            st.next_id += 1;
            let sid = st.next_id;
            match st.deployments.iter_mut().find(|d| d.id == id) {
                Some(d) => {
                    d.statuses.push(body.clone());
                    (201, json!({"id": sid, "state": body["state"]}))
                }
                None => (404, json!({"message": "Not Found"})),
            }
        }
        ("GET", ["repos", o, r, "issues", n, "comments"]) => {
            let repo = format!("{o}/{r}");
            let pr: u64 = n.parse().unwrap_or(0);
            if page > 1 {
                return (200, json!([]));
            }
            let list: Vec<Value> = st
                .comments
                .iter()
                .filter(|c| c.repo == repo && c.pr == pr)
                .map(|c| json!({"id": c.id, "body": c.body, "user": {"login": c.author}}))
                .collect();
            (200, Value::Array(list))
        }
        ("POST", ["repos", o, r, "issues", n, "comments"]) => {
            st.next_id += 1;
            let id = st.next_id;
            let c = Comment {
                id,
                repo: format!("{o}/{r}"),
                pr: n.parse().unwrap_or(0),
                body: body["body"].as_str().unwrap_or_default().to_owned(),
                edits: 0,
                author: BOT_LOGIN.into(),
            };
            st.comments.push(c);
            (201, json!({"id": id, "body": body["body"]}))
        }
        ("PATCH", ["repos", _, _, "issues", "comments", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            match st.comments.iter_mut().find(|c| c.id == id) {
                Some(c) => {
                    c.body = body["body"].as_str().unwrap_or_default().to_owned();
                    c.edits += 1;
                    (200, json!({"id": id, "body": c.body}))
                }
                None => (404, json!({"message": "Not Found"})),
            }
        }
        _ => (
            404,
            json!({"message": format!("fake GitHub has no route for {method} {path}")}),
        ),
    }
}

// --- Actions settings and self-hosted runners (what `codeb-workflow-gen doctor` reads) -------
//
// The answers have the shapes of GitHub's REST documentation (API version 2022-11-28), trimmed
// to realistic examples of the documented fields:
// - GET /repos/{owner}/{repo}: docs.github.com/en/rest/repos/repos#get-a-repository
// - GET /repos/{owner}/{repo}/actions/permissions/fork-pr-contributor-approval and
//   .../fork-pr-workflows-private-repos: docs.github.com/en/rest/actions/permissions
// - GET /repos/{owner}/{repo}/actions/runners:
//   docs.github.com/en/rest/actions/self-hosted-runners#list-self-hosted-runners-for-a-repository
// - GET /orgs/{org}/actions/runner-groups[?visible_to_repository=NAME] and
//   GET /orgs/{org}/actions/runner-groups/{id}/runners:
//   docs.github.com/en/rest/actions/self-hosted-runner-groups

#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// By `owner/name`.
    pub repos: BTreeMap<String, RepoSettings>,
    /// By organization login.
    pub groups: BTreeMap<String, Vec<RunnerGroup>>,
    /// Paths (without query) answered with this status and GitHub's error body instead.
    pub fail: BTreeMap<String, u16>,
}

#[derive(Debug, Clone)]
pub struct RepoSettings {
    pub private: bool,
    /// `Organization` or `User`.
    pub owner_type: String,
    pub approval_policy: String,
    pub run_workflows_from_fork_pull_requests: bool,
    pub runners: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct RunnerGroup {
    pub id: u64,
    pub name: String,
    /// `owner/name` of the repositories that may use it (visibility `selected`); empty: all.
    pub repositories: Vec<String>,
    pub allows_public_repositories: bool,
    pub restricted_to_workflows: bool,
    pub selected_workflows: Vec<String>,
    pub runners: Vec<String>,
}

impl FakeGitHub {
    pub fn set_repo_settings(&self, repo: &str, settings: RepoSettings) {
        self.lock().settings.repos.insert(repo.to_owned(), settings);
    }

    pub fn add_runner_group(&self, org: &str, group: RunnerGroup) {
        self.lock()
            .settings
            .groups
            .entry(org.to_owned())
            .or_default()
            .push(group);
    }

    /// Answers `path` with `status` (and GitHub's error body) from now on.
    pub fn fail(&self, path: &str, status: u16) {
        self.lock().settings.fail.insert(path.to_owned(), status);
    }
}

fn runner_json(id: u64, name: &str) -> Value {
    json!({
        "id": id,
        "name": name,
        "os": "linux",
        "status": "online",
        "busy": false,
        "ephemeral": false,
        "labels": [
            {"id": 5, "name": "self-hosted", "type": "read-only"},
            {"id": 7, "name": "X64", "type": "read-only"},
            {"id": 11, "name": "Linux", "type": "read-only"}
        ]
    })
}

fn runners_json(names: &[String], query: &str) -> Value {
    let page: usize = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("page="))
        .and_then(|p| p.parse().ok())
        .unwrap_or(1);
    let list: Vec<Value> = if page == 1 {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| runner_json(20 + i as u64, n))
            .collect()
    } else {
        vec![]
    };
    json!({"total_count": names.len(), "runners": list})
}

fn settings_route(
    s: &Settings,
    method: &str,
    path: &str,
    query: &str,
    seg: &[&str],
) -> Option<(u16, Value)> {
    if method != "GET" {
        return None;
    }
    if let Some(&status) = s.fail.get(path) {
        let message = match status {
            401 => "Bad credentials",
            403 => "Resource not accessible by personal access token",
            404 => "Not Found",
            _ => "Server Error",
        };
        return Some((
            status,
            json!({"message": message, "documentation_url": "https://docs.github.com/rest", "status": status.to_string()}),
        ));
    }
    let not_found = || {
        (
            404,
            json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}),
        )
    };
    match seg {
        ["repos", o, r, rest @ ..] => {
            let full = format!("{o}/{r}");
            let repo = s.repos.get(&full)?;
            Some(match rest {
                [] => (
                    200,
                    json!({
                        "id": 1296269,
                        "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5",
                        "name": r,
                        "full_name": full,
                        "owner": {
                            "login": o,
                            "id": 1,
                            "node_id": "MDQ6VXNlcjE=",
                            "type": repo.owner_type,
                            "site_admin": false
                        },
                        "private": repo.private,
                        "visibility": if repo.private { "private" } else { "public" },
                        "html_url": format!("https://github.com/{full}"),
                        "fork": false,
                        "default_branch": "main",
                        "allow_forking": true
                    }),
                ),
                ["actions", "permissions", "fork-pr-contributor-approval"] => {
                    (200, json!({"approval_policy": repo.approval_policy}))
                }
                ["actions", "permissions", "fork-pr-workflows-private-repos"] if repo.private => (
                    200,
                    json!({
                        "run_workflows_from_fork_pull_requests": repo.run_workflows_from_fork_pull_requests,
                        "send_write_tokens_to_workflows": false,
                        "send_secrets_and_variables": false,
                        "require_approval_for_fork_pr_workflows": true
                    }),
                ),
                ["actions", "runners"] => (200, runners_json(&repo.runners, query)),
                _ => return None,
            })
        }
        ["orgs", org, "actions", "runner-groups", rest @ ..] => {
            let groups = s.groups.get(*org).cloned().unwrap_or_default();
            let visible_to = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("visible_to_repository="))
                .map(|r| format!("{org}/{r}"));
            Some(match rest {
                [] => {
                    let list: Vec<Value> = groups
                        .iter()
                        .filter(|g| {
                            visible_to.as_ref().is_none_or(|r| {
                                g.repositories.is_empty() || g.repositories.contains(r)
                            })
                        })
                        .map(|g| {
                            let mut v = json!({
                                "id": g.id,
                                "name": g.name,
                                "visibility": if g.repositories.is_empty() { "all" } else { "selected" },
                                "default": g.id == 1,
                                "runners_url": format!("https://api.github.com/orgs/{org}/actions/runner-groups/{}/runners", g.id),
                                "hosted_runners_url": format!("https://api.github.com/orgs/{org}/actions/runner-groups/{}/hosted-runners", g.id),
                                "network_configuration_id": null,
                                "inherited": false,
                                "allows_public_repositories": g.allows_public_repositories,
                                "restricted_to_workflows": g.restricted_to_workflows,
                                "selected_workflows": g.selected_workflows,
                                "workflow_restrictions_read_only": false
                            });
                            if !g.repositories.is_empty() {
                                v["selected_repositories_url"] = json!(format!(
                                    "https://api.github.com/orgs/{org}/actions/runner-groups/{}/repositories",
                                    g.id
                                ));
                            }
                            v
                        })
                        .collect();
                    (
                        200,
                        json!({"total_count": list.len(), "runner_groups": list}),
                    )
                }
                [id, "runners"] => match groups.iter().find(|g| g.id.to_string() == *id) {
                    Some(g) => (200, runners_json(&g.runners, query)),
                    None => not_found(),
                },
                _ => return None,
            })
        }
        _ => None,
    }
}

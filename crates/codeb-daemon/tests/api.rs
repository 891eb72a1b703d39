//! The control plane in process (`oneshot` through the router): every cell of the permission
//! table over HTTP, the 401s (missing, malformed, wrong-checksum, unknown, expired, revoked,
//! disabled), names that break the rules (400 naming the rule), the audit log (denied writes
//! recorded, append-only, no secrets), and tokens stored only as SHA-256.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use codeb_api::perm::{Access, TABLE};
use codeb_api::{Action, Role, Token, TokenCreated, UserCreated};
use codeb_daemon::config::{self, Config};
use codeb_daemon::worker::Applier;
use codeb_github::Intent;
use codeb_previews::{Applied, PreviewError, ReconcileReport};
use serde_json::{Value, json};
use tower::ServiceExt;

struct Nothing;

impl Applier for Nothing {
    async fn apply(&self, _: &Intent) -> Result<Applied, PreviewError> {
        Ok(Applied::Skipped("test".into()))
    }
    async fn reconcile(&self) -> Result<ReconcileReport, PreviewError> {
        Ok(ReconcileReport::default())
    }
    fn pool_usage(&self) -> (usize, usize) {
        (0, 0)
    }
}

const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

struct Plane {
    app: Router,
    cfg: Config,
    admin: String,
    _dir: tempfile::TempDir,
    _shutdown: tokio::sync::watch::Sender<bool>,
}

fn config(dir: &Path) -> Config {
    std::fs::write(
        dir.join("manifest.yaml"),
        "version: 1\nprojects:\n  mine:\n    production: {port: 4101}\n  theirs:\n    production: {port: 4102}\n",
    )
    .expect("manifest");
    std::fs::create_dir_all(dir.join("quadlet")).expect("quadlet dir");
    let text = format!(
        r#"
listen = "127.0.0.1:0"
state_dir = "state"
[previews]
manifest = "{m}"
quadlet_dir = "{q}"
caddy_admin = ""
runtime = "podman"
[api]
max_concurrency = 256
"#,
        m = dir.join("manifest.yaml").display(),
        q = dir.join("quadlet").display()
    );
    config::parse(&dir.join("daemon.toml"), &text, &|k| {
        (k == config::vars::CODEB_WEBHOOK_SECRET).then(|| "hook-secret".to_owned())
    })
    .expect("config")
}

async fn plane() -> Plane {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    std::fs::create_dir_all(&cfg.state_dir).expect("state");
    let (db, _) = codeb_daemon::api::db::Db::open(&cfg.db_path()).expect("db");
    let t = codeb_daemon::api::team::bootstrap_admin(
        &db,
        "root",
        std::time::Duration::from_secs(3600),
        false,
    )
    .expect("bootstrap");
    let (app, shutdown) = codeb_daemon::app_for_tests(&cfg, Arc::new(Nothing)).expect("app");
    Plane {
        app,
        cfg,
        admin: t.token,
        _dir: dir,
        _shutdown: shutdown,
    }
}

impl Plane {
    async fn call(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => b
                .header("content-type", "application/json")
                .body(Body::from(v.to_string())),
            None => b.body(Body::empty()),
        }
        .expect("request");
        let resp = self.app.clone().oneshot(req).await.expect("response");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
            .await
            .expect("body");
        let v = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, v)
    }

    async fn ok(&self, method: &str, path: &str, body: Value) -> Value {
        let (s, v) = self.call(Some(&self.admin), method, path, Some(body)).await;
        assert!(s.is_success(), "{method} {path}: {s} {v}");
        v
    }

    async fn project(&self, name: &str, owners: &[&str]) {
        self.ok(
            "POST",
            "/api/v1/projects",
            json!({"name": name, "type": "static", "repository": format!("acme/{name}"),
                   "image": format!("127.0.0.1:1/acme/{name}"), "container_port": 8080,
                   "environments": [{"name": "production"}], "owners": owners}),
        )
        .await;
    }

    async fn user(&self, name: &str, role: Role, projects: &[&str]) -> String {
        let v = self
            .ok(
                "POST",
                "/api/v1/team",
                json!({"name": name, "role": role, "projects": projects}),
            )
            .await;
        let created: UserCreated = serde_json::from_value(v).expect("user created");
        created.token.token
    }
}

/// One request per action; `project` is the project acted on (for owner cells).
fn request(action: Action, project: &str, who: &str) -> (&'static str, String, Option<Value>) {
    let p = project;
    match action {
        Action::Whoami => ("GET", "/api/v1/whoami".into(), None),
        Action::ProjectList => ("GET", "/api/v1/projects".into(), None),
        Action::ProjectGet => ("GET", format!("/api/v1/projects/{p}"), None),
        Action::ProjectCreate => (
            "POST",
            "/api/v1/projects".into(),
            Some(
                json!({"name": format!("new-{who}"), "type": "static", "repository": "acme/x",
                        "image": "127.0.0.1:1/acme/x", "container_port": 80,
                        "environments": [{"name": "staging"}]}),
            ),
        ),
        Action::ProjectUpdate => (
            "PUT",
            format!("/api/v1/projects/{p}"),
            Some(
                json!({"name": p, "type": "static", "repository": format!("acme/{p}"),
                        "image": format!("127.0.0.1:1/acme/{p}"), "container_port": 8080,
                        "environments": [{"name": "production"}], "owners": ["dev"]}),
            ),
        ),
        Action::ProjectDelete => ("DELETE", format!("/api/v1/projects/gone-{who}"), None),
        Action::Scan => ("GET", format!("/api/v1/projects/{p}/scan"), None),
        Action::Up => ("GET", "/api/v1/ports".into(), None),
        Action::Deploy => (
            "POST",
            format!("/api/v1/projects/{p}/deploy"),
            Some(json!({"environment": "production", "dry_run": true,
                        "image": format!("127.0.0.1:1/acme/{p}@{DIGEST}")})),
        ),
        Action::Rollback => (
            "POST",
            format!("/api/v1/projects/{p}/rollback"),
            Some(json!({"environment": "production", "dry_run": true})),
        ),
        Action::JobList => ("GET", "/api/v1/jobs".into(), None),
        Action::JobGet => ("GET", "/api/v1/jobs/999999".into(), None),
        Action::Logs => ("GET", format!("/api/v1/projects/{p}/logs"), None),
        Action::Health => ("GET", format!("/api/v1/health?project={p}"), None),
        Action::SsotStatus => ("GET", "/api/v1/ssot/status".into(), None),
        Action::SsotSync => (
            "POST",
            "/api/v1/ssot/sync".into(),
            Some(json!({"dry_run": true})),
        ),
        Action::SsotValidate => (
            "POST",
            "/api/v1/ssot/validate".into(),
            Some(json!({"fix": false})),
        ),
        Action::SsotFix => (
            "POST",
            "/api/v1/ssot/validate".into(),
            Some(json!({"fix": true})),
        ),
        Action::TeamList => ("GET", "/api/v1/team".into(), None),
        Action::TeamStatus => ("GET", "/api/v1/team/status".into(), None),
        Action::TeamAdd => (
            "POST",
            "/api/v1/team".into(),
            Some(json!({"name": format!("added-by-{who}"), "role": "viewer"})),
        ),
        Action::TeamRole => (
            "POST",
            "/api/v1/team/999999/role".into(),
            Some(json!({"role": "viewer"})),
        ),
        Action::TeamToggle => ("POST", "/api/v1/team/999999/toggle".into(), None),
        Action::TeamProjects => (
            "PUT",
            "/api/v1/team/999999/projects".into(),
            Some(json!({"projects": []})),
        ),
        Action::TokenList => ("GET", "/api/v1/tokens".into(), None),
        Action::TokenCreate => (
            "POST",
            "/api/v1/tokens".into(),
            Some(json!({"user_id": 999999, "name": "x"})),
        ),
        Action::TokenRevoke => ("DELETE", "/api/v1/tokens/999999".into(), None),
        Action::AuditList => ("GET", "/api/v1/audit".into(), None),
        Action::BackupList => ("GET", format!("/api/v1/backups?project={p}"), None),
        Action::Restore => (
            "POST",
            format!("/api/v1/projects/{p}/restore"),
            Some(json!({"date": "2024-12-20", "dry_run": true})),
        ),
        Action::ProjectInit => (
            "POST",
            format!("/api/v1/projects/{p}/init"),
            Some(json!({"type": "static", "dry_run": true})),
        ),
        Action::ProjectRemove => (
            "POST",
            format!("/api/v1/projects/gone-{who}/remove"),
            Some(json!({"yes": true})),
        ),
        Action::ScaleStatus => ("GET", "/api/v1/scale/status?window=1s".into(), None),
        Action::EnvRead => (
            "GET",
            format!("/api/v1/projects/{p}/env?environment=production"),
            None,
        ),
        Action::DomainSetup => (
            "POST",
            "/api/v1/domains".into(),
            Some(json!({"project": p, "domain": format!("{who}.example.com")})),
        ),
        Action::DomainRemove => ("DELETE", format!("/api/v1/domains/{who}.example.com"), None),
        Action::DomainList => ("GET", "/api/v1/domains".into(), None),
        Action::DomainZones => ("GET", "/api/v1/domains/zones".into(), None),
        Action::ScaleHostList => ("GET", "/api/v1/scale/hosts".into(), None),
        Action::ScaleHostAdd => (
            "POST",
            "/api/v1/scale/hosts".into(),
            Some(json!({"host": format!("h-{who}"), "agent_url": "http://127.0.0.1:9"})),
        ),
        Action::ScaleHostRemove => ("DELETE", format!("/api/v1/scale/hosts/h-{who}"), None),
    }
}

/// What an allowed request answers (authorization passed; the request itself may then find
/// nothing): the status each row's request gets from an authorized caller.
fn allowed_status(action: Action) -> &'static [u16] {
    match action {
        Action::ProjectCreate | Action::TeamAdd => &[201],
        Action::ProjectDelete
        | Action::JobGet
        | Action::TeamRole
        | Action::TeamToggle
        | Action::TeamProjects
        | Action::TokenCreate
        | Action::TokenRevoke => &[404],
        // No release to roll back to; no container to read logs from.
        Action::Rollback => &[422],
        Action::Logs => &[404],
        // This plane has no `[api] backup_config`.
        Action::Restore => &[422],
        // This plane has no [api.provision]: init is refused after authorization.
        Action::ProjectInit => &[422],
        Action::ProjectRemove => &[404],
        // This plane has no [domains] configured: the write is refused after authorization.
        Action::DomainSetup | Action::DomainRemove => &[422],
        // No token file for the host (`codeb-daemon agent-token`): refused after authorization.
        Action::ScaleHostAdd => &[422],
        Action::ScaleHostRemove => &[404],
        _ => &[200],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cell_of_the_permission_table_holds_over_http() {
    let p = plane().await;
    let dev = p.user("dev", Role::Developer, &[]).await;
    let view = p.user("view", Role::Viewer, &[]).await;
    p.project("mine", &["dev"]).await;
    p.project("theirs", &[]).await;
    let tokens = [
        (Role::Admin, p.admin.clone()),
        (Role::Developer, dev),
        (Role::Viewer, view),
    ];
    let mut cells = 0;
    for (action, row) in TABLE {
        for (i, (role, token)) in tokens.iter().enumerate() {
            let access = row[i];
            // Owner cells are tried on the caller's own project and on another one.
            let projects: &[(&str, bool)] = match access {
                Access::Owner => &[("mine", true), ("theirs", false)],
                Access::Allow => &[("mine", true)],
                Access::Deny => &[("mine", false)],
            };
            for (project, expect_allowed) in projects {
                let (method, path, body) = request(action, project, role.as_str());
                let (status, v) = p.call(Some(token), method, &path, body).await;
                if *expect_allowed {
                    assert!(
                        allowed_status(action).contains(&status.as_u16()),
                        "{action} as {role} on {project}: {status} {v}"
                    );
                } else {
                    assert_eq!(
                        status,
                        StatusCode::FORBIDDEN,
                        "{action} as {role} on {project}: {v}"
                    );
                    assert_eq!(v["error"]["code"], "forbidden", "{v}");
                }
                cells += 1;
            }
        }
    }
    let owner_cells = TABLE
        .iter()
        .flat_map(|(_, row)| row.iter())
        .filter(|a| **a == Access::Owner)
        .count();
    assert_eq!(
        cells,
        TABLE.len() * 3 + owner_cells,
        "owner cells are tried twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_401_and_expiry_is_named() {
    let p = plane().await;
    let good = Token::parse(&p.admin).expect("admin token");
    let mut wrong_sum = p.admin.clone().into_bytes();
    let last = wrong_sum.len() - 1;
    wrong_sum[last] = if wrong_sum[last] == b'A' { b'B' } else { b'A' };
    let wrong_sum = String::from_utf8(wrong_sum).expect("ascii");
    let unknown = Token::from_random([7; 32]);
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("malformed", Some("codeb_short".into())),
        ("other scheme", Some(format!("x{}", good.expose()))),
        ("wrong checksum", Some(wrong_sum)),
        ("unknown", Some(unknown.expose().to_owned())),
    ];
    for (what, tok) in cases {
        let (s, v) = p
            .call(tok.as_deref(), "GET", "/api/v1/projects", None)
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{what}: {v}");
        assert_eq!(v["error"]["code"], "unauthorized", "{what}: {v}");
    }

    // Expired: a token with a 1 s lifetime.
    let v = p
        .ok(
            "POST",
            "/api/v1/tokens",
            json!({"user_id": 1, "name": "short", "expires_in": "1s"}),
        )
        .await;
    let short: TokenCreated = serde_json::from_value(v).expect("token");
    let (s, _) = p
        .call(Some(&short.token), "GET", "/api/v1/whoami", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (s, v) = p
        .call(Some(&short.token), "GET", "/api/v1/whoami", None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"]["code"], "token_expired", "{v}");

    // Revoked.
    let v = p
        .ok(
            "POST",
            "/api/v1/tokens",
            json!({"user_id": 1, "name": "revoke-me"}),
        )
        .await;
    let t: TokenCreated = serde_json::from_value(v).expect("token");
    p.ok(
        "DELETE",
        &format!("/api/v1/tokens/{}", t.info.id),
        json!({}),
    )
    .await;
    let (s, v) = p.call(Some(&t.token), "GET", "/api/v1/whoami", None).await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("unauthorized"))
    );

    // A disabled user's token.
    let dev = p.user("dis", Role::Developer, &[]).await;
    let (_, me) = p.call(Some(&dev), "GET", "/api/v1/whoami", None).await;
    let id = me["user"]["id"].as_i64().expect("id");
    p.ok("POST", &format!("/api/v1/team/{id}/toggle"), json!({}))
        .await;
    let (s, _) = p.call(Some(&dev), "GET", "/api/v1/whoami", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // The last admin cannot disable themselves.
    let (s, v) = p
        .call(Some(&p.admin), "POST", "/api/v1/team/1/toggle", None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_slashes_dots_sql_or_shell_characters_get_400_naming_the_rule() {
    let p = plane().await;
    for bad in [
        "a%2Fb",
        "..",
        "x%3B%20rm%20-rf%20%2F",
        "x'%20OR%201%3D1--",
        "%24(id)",
        "UPPER",
        "a%60b%60",
    ] {
        let (s, v) = p
            .call(
                Some(&p.admin),
                "GET",
                &format!("/api/v1/projects/{bad}"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert_eq!(v["error"]["code"], "invalid_name", "{bad}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("DNS label"),
            "{bad}: {v}"
        );
    }
    for bad in ["a/b", "../etc", "x; rm -rf /", "x' OR 1=1--", "$(id)"] {
        let (s, v) = p
            .call(
                Some(&p.admin),
                "POST",
                "/api/v1/projects",
                Some(
                    json!({"name": bad, "type": "static", "repository": "a/b", "image": "r/x",
                            "container_port": 1, "environments": [{"name": "production"}]}),
                ),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert_eq!(v["error"]["code"], "invalid_name", "{bad}: {v}");
        let (s, v) = p
            .call(
                Some(&p.admin),
                "POST",
                "/api/v1/team",
                Some(json!({"name": bad, "role": "viewer"})),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "user {bad}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("rule"),
            "{v}"
        );
    }
    // Nothing was created by any of them.
    let (_, v) = p
        .call(Some(&p.admin), "GET", "/api/v1/projects", None)
        .await;
    assert_eq!(v, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_deploying_a_project_not_theirs_is_refused_and_audited_without_secrets() {
    let p = plane().await;
    let dev = p.user("dev", Role::Developer, &[]).await;
    p.project("theirs", &[]).await;
    let (s, _) = p
        .call(
            Some(&dev),
            "POST",
            "/api/v1/projects/theirs/deploy",
            Some(json!({"environment": "production"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = p
        .call(
            Some(&p.admin),
            "GET",
            "/api/v1/audit?project=theirs&since=1h",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let rows = v.as_array().expect("rows");
    assert!(
        rows.iter()
            .any(|r| r["action"] == "deploy" && r["actor"] == "dev" && r["result"] == "denied"),
        "{v}"
    );
    // Every token minted in this test, and the webhook secret, appear in no audit row, no
    // listing and nowhere in the database file.
    let (_, all) = p.call(Some(&p.admin), "GET", "/api/v1/audit", None).await;
    let (_, toks) = p.call(Some(&p.admin), "GET", "/api/v1/tokens", None).await;
    let (_, team) = p.call(Some(&p.admin), "GET", "/api/v1/team", None).await;
    let db = std::fs::read(p.cfg.db_path()).expect("db file");
    let wal = std::fs::read(p.cfg.db_path().with_extension("sqlite3-wal")).unwrap_or_default();
    for secret in [p.admin.as_str(), dev.as_str(), "hook-secret"] {
        let body = &secret[6.min(secret.len())..];
        for (what, text) in [
            ("audit", all.to_string()),
            ("tokens", toks.to_string()),
            ("team", team.to_string()),
        ] {
            assert!(!text.contains(body), "{what} holds a secret");
        }
        for bytes in [&db, &wal] {
            assert!(
                !bytes.windows(body.len()).any(|w| w == body.as_bytes()),
                "the database holds a token in clear"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_refuses_updates_and_deletes() {
    let p = plane().await;
    let conn = rusqlite::Connection::open(p.cfg.db_path()).expect("open");
    let n: i64 = conn
        .query_row("SELECT count(*) FROM api_audit", [], |r| r.get(0))
        .expect("count");
    assert!(n >= 1, "bootstrap is audited");
    let e = conn
        .execute("UPDATE api_audit SET result = 'x'", [])
        .expect_err("update refused");
    assert!(e.to_string().contains("append-only"), "{e}");
    conn.execute("DELETE FROM api_audit", [])
        .expect_err("delete refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_returns_the_plan_and_queues_nothing() {
    let p = plane().await;
    p.project("mine", &[]).await;
    let (s, v) = p
        .call(
            Some(&p.admin),
            "POST",
            "/api/v1/projects/mine/deploy",
            Some(json!({"environment": "production", "dry_run": true,
                        "image": format!("127.0.0.1:1/acme/mine@{DIGEST}")})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["digest"], DIGEST);
    assert_eq!(v["port"], 4101);
    assert_eq!(v["slot"], "blue");
    assert_eq!(v["health_url"], "http://127.0.0.1:4101/health");
    let (_, jobs) = p.call(Some(&p.admin), "GET", "/api/v1/jobs", None).await;
    assert_eq!(jobs, json!([]));
}

/// `GET /projects/{name}/env` (`we scale k8s`'s Secret): the values for admins and owners,
/// 403 for the rest, audited with the keys only; the registry refuses bad Kubernetes bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_values_go_to_owners_and_admins_and_are_audited_by_key() {
    const VALUE: &str = "pg-pass-7Hq2zX";
    let p = plane().await;
    let dev = p.user("dev", Role::Developer, &[]).await;
    let view = p.user("view", Role::Viewer, &[]).await;
    let env_file = p.cfg.state_dir.join("mine-production.env");
    std::fs::write(
        &env_file,
        format!("# db\nDATABASE_PASSWORD={VALUE}\nPORT=8080\n"),
    )
    .expect("env file");
    let spec = |k: Value| {
        json!({"name": "mine", "type": "static", "repository": "acme/mine",
               "image": "127.0.0.1:1/acme/mine", "container_port": 8080,
               "environments": [{"name": "production", "env_file": env_file.display().to_string()},
                                {"name": "staging"}],
               "owners": ["dev"], "kubernetes": k})
    };
    let (s, v) = p
        .call(
            Some(&p.admin),
            "POST",
            "/api/v1/projects",
            Some(spec(json!({"min_replicas": 5, "max_replicas": 2}))),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("min_replicas (5) is greater than max_replicas (2)")),
        "{v}"
    );
    p.ok(
        "POST",
        "/api/v1/projects",
        spec(json!({"min_replicas": 3, "hosts": {"production": "mine.example.com"}})),
    )
    .await;
    let (_, got) = p
        .call(Some(&p.admin), "GET", "/api/v1/projects/mine", None)
        .await;
    assert_eq!(got["kubernetes"]["min_replicas"], 3, "{got}");
    assert_eq!(got["kubernetes"]["max_replicas"], 10, "{got}");

    let path = "/api/v1/projects/mine/env?environment=production";
    for token in [&p.admin, &dev] {
        let (s, v) = p.call(Some(token), "GET", path, None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["values"]["DATABASE_PASSWORD"], VALUE, "{v}");
        assert_eq!(v["values"]["PORT"], "8080", "{v}");
    }
    let (s, _) = p.call(Some(&view), "GET", path, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = p
        .call(
            Some(&p.admin),
            "GET",
            "/api/v1/projects/mine/env?environment=staging",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["values"], Value::Null, "no env file: no values");

    let (_, audit) = p
        .call(Some(&p.admin), "GET", "/api/v1/audit?project=mine", None)
        .await;
    let reads: Vec<&Value> = audit
        .as_array()
        .expect("audit")
        .iter()
        .filter(|e| e["action"] == "env.read")
        .collect();
    assert_eq!(reads.len(), 3, "{audit}");
    assert_eq!(
        reads
            .iter()
            .find(|e| e["target"] == "mine/production")
            .map(|e| e["params"]["variables"].clone()),
        Some(json!(["DATABASE_PASSWORD", "PORT"])),
        "{audit}"
    );
    assert!(!audit.to_string().contains(VALUE), "{audit}");

    std::fs::remove_file(&env_file).expect("rm");
    let (s, v) = p.call(Some(&p.admin), "GET", path, None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot be read")),
        "{v}"
    );
}

//! `codeb-workflow-gen doctor`: the claim "forks never reach the self-hosted runner" was an
//! `if:` in a workflow file that a fork's pull_request run takes from the fork. The doctor reads
//! the settings that really decide it from GitHub's REST API (here the fake GitHub, answering
//! with the documented shapes) and fails with the setting to change.

use crate::fake_github::{FakeGitHub, RepoSettings, RunnerGroup};
use crate::util::{Run, codeb, run, tempdir};

fn doctor(gh: &FakeGitHub, repo: &str, token: Option<&str>) -> Run {
    let dir = tempdir();
    let mut c = codeb("codeb-workflow-gen");
    c.current_dir(dir.path())
        .env("GITHUB_API_URL", &gh.url)
        .args(["doctor", "--repo", repo]);
    if let Some(t) = token {
        c.env("CODEB_GITHUB_TOKEN", t);
    }
    run(&mut c)
}

fn public_org_repo(runners: &[&str]) -> RepoSettings {
    RepoSettings {
        private: false,
        owner_type: "Organization".into(),
        approval_policy: "first_time_contributors".into(),
        run_workflows_from_fork_pull_requests: true,
        runners: runners.iter().map(|s| (*s).to_owned()).collect(),
    }
}

const PINNED: &str = "acme/app/.github/workflows/app-deploy.yml@refs/heads/main";

#[test]
fn forks_reach_a_repository_runner_of_a_public_repo_despite_the_if_guard() {
    let gh = FakeGitHub::start();
    gh.set_repo_settings("acme/app", public_org_repo(&["app1"]));
    let r = doctor(&gh, "acme/app", Some("t0ken-value"));
    assert_eq!(r.code, 1, "{}", r.all());
    let all = r.all();
    assert!(all.contains("repository runner(s) app1"), "{all}");
    assert!(all.contains("fork's copy of the workflow"), "{all}");
    assert!(
        all.contains(&format!("Workflow access: Selected workflows → `{PINNED}`")),
        "the exact setting: {all}"
    );
    assert!(
        all.contains("approval_policy=all_external_contributors"),
        "{all}"
    );
    assert!(
        !all.contains("t0ken-value"),
        "the token never prints: {all}"
    );
    let asked = gh.lock().requests.clone();
    for path in [
        "GET /repos/acme/app",
        "GET /repos/acme/app/actions/permissions/fork-pr-contributor-approval",
        "GET /repos/acme/app/actions/runners?per_page=100&page=1",
        "GET /orgs/acme/actions/runner-groups?visible_to_repository=app&per_page=100&page=1",
    ] {
        assert!(asked.iter().any(|a| a == path), "{path} in {asked:?}");
    }
}

#[test]
fn forks_reach_an_org_runner_group_not_restricted_to_workflows() {
    let gh = FakeGitHub::start();
    gh.set_repo_settings("acme/app", public_org_repo(&[]));
    gh.add_runner_group(
        "acme",
        RunnerGroup {
            id: 1,
            name: "Default".into(),
            repositories: vec![],
            allows_public_repositories: true,
            restricted_to_workflows: false,
            selected_workflows: vec![],
            runners: vec!["app1".into()],
        },
    );
    let r = doctor(&gh, "acme/app", Some("t"));
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all().contains("runner group `Default` (1 runner(s))"),
        "{}",
        r.all()
    );
    assert!(
        r.all()
            .contains("PATCH /orgs/acme/actions/runner-groups/1 with restricted_to_workflows=true"),
        "{}",
        r.all()
    );
}

#[test]
fn a_runner_group_restricted_to_the_deploy_workflow_on_main_is_safe() {
    let gh = FakeGitHub::start();
    gh.set_repo_settings("acme/app", public_org_repo(&[]));
    let group = |workflows: Vec<String>| RunnerGroup {
        id: 7,
        name: "deploy".into(),
        repositories: vec!["acme/app".into()],
        allows_public_repositories: true,
        restricted_to_workflows: true,
        selected_workflows: workflows,
        runners: vec!["app1".into()],
    };
    gh.add_runner_group("acme", group(vec![PINNED.into()]));
    // A group for another repository is not visible to this one.
    gh.add_runner_group(
        "acme",
        RunnerGroup {
            id: 8,
            name: "other".into(),
            repositories: vec!["acme/other".into()],
            allows_public_repositories: true,
            restricted_to_workflows: false,
            selected_workflows: vec![],
            runners: vec!["other1".into()],
        },
    );
    let r = doctor(&gh, "acme/app", Some("t"));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("ok: no fork pull request can reach"),
        "{}",
        r.all()
    );

    // The same group with a wildcard ref lets a fork's refs/pull/N/merge run in.
    let gh = FakeGitHub::start();
    gh.set_repo_settings("acme/app", public_org_repo(&[]));
    gh.add_runner_group(
        "acme",
        group(vec!["acme/app/.github/workflows/app-deploy.yml@*".into()]),
    );
    let r = doctor(&gh, "acme/app", Some("t"));
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all().contains("Pin each selected workflow"),
        "{}",
        r.all()
    );
}

#[test]
fn a_private_repository_without_fork_runs_is_safe_and_with_them_is_not() {
    let gh = FakeGitHub::start();
    let mut s = RepoSettings {
        private: true,
        owner_type: "User".into(),
        approval_policy: String::new(),
        run_workflows_from_fork_pull_requests: false,
        runners: vec!["app1".into()],
    };
    gh.set_repo_settings("octo/app", s.clone());
    let r = doctor(&gh, "octo/app", Some("t"));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr
            .contains("does not run workflows from fork pull requests"),
        "{}",
        r.all()
    );
    s.run_workflows_from_fork_pull_requests = true;
    gh.set_repo_settings("octo/app", s);
    let r = doctor(&gh, "octo/app", Some("t"));
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all()
            .contains("run_workflows_from_fork_pull_requests=false"),
        "{}",
        r.all()
    );
}

#[test]
fn doctor_errors_name_the_request_and_the_fix() {
    let gh = FakeGitHub::start();
    gh.set_repo_settings("acme/app", public_org_repo(&[]));
    gh.fail("/repos/acme/app", 401);
    let r = doctor(&gh, "acme/app", None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("401 Unauthorized to GET ")
            && r.stderr.contains("no token was sent")
            && r.stderr.contains("CODEB_GITHUB_TOKEN"),
        "{}",
        r.all()
    );

    let gh = FakeGitHub::start();
    gh.set_repo_settings("acme/app", public_org_repo(&[]));
    gh.fail("/repos/acme/app/actions/runners", 403);
    let r = doctor(&gh, "acme/app", Some("t"));
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("403 Forbidden")
            && r.stderr
                .contains("Resource not accessible by personal access token")
            && r.stderr.contains("repository Administration read"),
        "{}",
        r.all()
    );

    let gh = FakeGitHub::start();
    let r = doctor(&gh, "acme/missing", Some("t"));
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("404 Not Found to GET ")
            && r.stderr
                .contains("/repos/acme/missing: the repository not found; check --repo"),
        "{}",
        r.all()
    );
    assert!(r.stdout.is_empty(), "{}", r.all());
}

//! The `we` binary on its own (no control plane): usage, credentials, exit codes, output
//! channels and completions. `we_control.rs` runs it against the real daemon.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use codeb_core::vars;

use crate::util::{Run, codeb, dead_port, run, tempdir};

/// `we` with its config directory in `home` and nothing from the ambient environment.
pub fn we(home: &Path) -> Command {
    let mut c = codeb("we");
    c.env(vars::XDG_CONFIG_HOME, home.join("config"))
        .env(vars::HOME, home)
        .env_remove(vars::NO_COLOR);
    c
}

/// Runs `we` with `stdin` piped in.
pub fn run_with_stdin(cmd: &mut Command, stdin: &str) -> Run {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn we");
    if let Some(mut s) = child.stdin.take() {
        let _ = s.write_all(stdin.as_bytes());
    }
    let out = child.wait_with_output().expect("wait for we");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn token(seed: u8) -> String {
    codeb_api::Token::from_random([seed; 32])
        .expose()
        .to_owned()
}

pub fn credentials(home: &Path) -> std::path::PathBuf {
    home.join("config/codeb/credentials.toml")
}

#[test]
fn we_usage_errors_exit_2_and_help_documents_exit_codes() {
    let home = tempdir();
    for args in [
        &[][..],
        &["frobnicate"],
        &["deploy", "myapp"],
        &["deploy", "myapp", "--environment", "qa"],
        &["scan", "myapp"],
        &["up", "--containers", "--ports"],
        &["team", "role", "x", "admin"],
        &["completions", "powershell"],
    ] {
        let r = run(we(home.path()).args(args));
        assert_eq!(r.code, 2, "{args:?}: {}", r.all());
        assert!(
            r.stdout.is_empty(),
            "usage goes to stderr: {args:?}: {}",
            r.all()
        );
    }
    let r = run(we(home.path()).arg("--help"));
    assert_eq!(r.code, 0, "{}", r.all());
    for needle in ["Exit codes", "3 forbidden", "4 not logged in", "--json"] {
        assert!(
            r.stdout.contains(needle),
            "help lacks {needle:?}: {}",
            r.stdout
        );
    }
    // Bad names are refused before anything is sent (CODEB_SERVER points at nothing).
    let r = run(we(home.path())
        .env(
            vars::CODEB_SERVER,
            format!("http://127.0.0.1:{}", dead_port()),
        )
        .env(vars::CODEB_TOKEN, token(1))
        .args(["logs", "../etc"]));
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("project `../etc`"), "{}", r.all());
    assert!(!r.stderr.contains("cannot reach"), "{}", r.all());
}

#[test]
fn we_without_credentials_exits_4_and_says_how_to_log_in() {
    let home = tempdir();
    for args in [&["up"][..], &["health"], &["team", "list"], &["audit"]] {
        let r = run(we(home.path()).args(args));
        assert_eq!(r.code, 4, "{args:?}: {}", r.all());
        assert!(r.stderr.contains("we login"), "{}", r.all());
        assert!(r.stdout.is_empty(), "{}", r.all());
    }
    // With --json the error is one JSON line on stderr; stdout stays empty.
    let r = run(we(home.path()).args(["up", "--json"]));
    assert_eq!(r.code, 4, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(r.stderr.trim()).expect("JSON error");
    assert_eq!(v["error"]["exit"], 4);
    assert_eq!(v["error"]["kind"], "not-logged-in");
    assert!(r.stdout.is_empty());
}

#[test]
fn we_login_rejects_a_malformed_token_without_echoing_it_or_writing_a_file() {
    let home = tempdir();
    let good = token(2);
    // One character changed: the checksum no longer matches.
    let mut bad = good.clone();
    bad.replace_range(10..11, if &good[10..11] == "A" { "B" } else { "A" });
    for (input, why) in [
        (bad.as_str(), "checksum"),
        ("codeb_short", "characters long"),
        ("ghp_0123456789", "codeb_"),
        ("", "no token on stdin"),
    ] {
        let r = run_with_stdin(
            we(home.path()).args(["login", "--server", "http://127.0.0.1:9"]),
            input,
        );
        assert_eq!(r.code, 4, "{input:?}: {}", r.all());
        assert!(r.stderr.contains(why), "{input:?}: {}", r.all());
        if !input.is_empty() {
            assert!(
                !r.all().contains(input),
                "the token was echoed: {}",
                r.all()
            );
        }
        assert!(!credentials(home.path()).exists());
    }
}

#[test]
fn we_login_refuses_plain_http_to_a_remote_host() {
    let home = tempdir();
    let r = run_with_stdin(
        we(home.path()).args(["login", "--server", "http://n1.example.com"]),
        &token(3),
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("unencrypted"), "{}", r.all());
    assert!(!credentials(home.path()).exists());
    let r = run(we(home.path()).args(["login"]));
    assert_eq!(r.code, 2, "no server: {}", r.all());
    assert!(r.stderr.contains("--server"), "{}", r.all());
}

#[test]
fn we_unreachable_server_exits_2_and_never_prints_the_token() {
    let home = tempdir();
    let t = token(4);
    let server = format!("http://127.0.0.1:{}", dead_port());
    for json in [false, true] {
        let mut c = we(home.path());
        c.env(vars::CODEB_SERVER, &server)
            .env(vars::CODEB_TOKEN, &t)
            .arg("up");
        if json {
            c.arg("--json");
        }
        let r = run(&mut c);
        assert_eq!(r.code, 2, "{}", r.all());
        assert!(r.stderr.contains("cannot reach"), "{}", r.all());
        assert!(!r.all().contains(&t), "token in output: {}", r.all());
        assert!(!r.all().contains(&t[6..20]), "part of the token in output");
    }
    let r = run_with_stdin(
        we(home.path()).args(["login", "--server", &server]),
        &format!("{t}\n"),
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(!r.all().contains(&t));
    assert!(
        !credentials(home.path()).exists(),
        "nothing stored after a failed login"
    );
}

#[test]
fn we_refuses_a_credentials_file_readable_by_others() {
    let home = tempdir();
    let path = credentials(home.path());
    std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    let t = token(5);
    std::fs::write(
        &path,
        format!(
            "server = \"http://127.0.0.1:{}\"\ntoken = \"{t}\"\n",
            dead_port()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let r = run(we(home.path()).arg("up"));
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(r.stderr.contains("chmod 600"), "{}", r.all());
    assert!(!r.all().contains(&t));
    // At 0600 the same file is used (and the dead server is what fails now).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let r = run(we(home.path()).arg("up"));
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("cannot reach"), "{}", r.all());
    // A broken file names itself and the fix.
    std::fs::write(&path, "server = 3\n").expect("write");
    let r = run(we(home.path()).arg("up"));
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(r.stderr.contains("credentials.toml") && r.stderr.contains("we login"));
}

#[test]
fn we_completions_for_bash_zsh_and_fish() {
    let home = tempdir();
    for shell in ["bash", "zsh", "fish"] {
        let r = run(we(home.path()).args(["completions", shell]));
        assert_eq!(r.code, 0, "{shell}: {}", r.all());
        for word in ["deploy", "rollback", "logs", "ssot"] {
            assert!(r.stdout.contains(word), "{shell} lacks {word}");
        }
    }
    // The bash script is valid bash.
    let dir = tempdir();
    let script = dir.path().join("we.bash");
    let r = run(we(home.path()).args(["completions", "bash"]));
    std::fs::write(&script, r.stdout).expect("write");
    let check = run(Command::new("bash").arg("-n").arg(&script));
    assert_eq!(check.code, 0, "bash -n: {}", check.all());
}

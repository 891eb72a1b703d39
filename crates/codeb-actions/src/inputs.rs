//! Action inputs as command-line flags.
//!
//! The runner exports an input `no-host-check` as `INPUT_NO-HOST-CHECK` (upper-cased, spaces
//! to `_`, hyphens kept); composite actions pass inputs through `env:`, where the underscore
//! spelling `INPUT_NO_HOST_CHECK` is the natural one. Both are accepted. A flag given on the
//! command line wins over its input; an empty input counts as not given, as in actions/toolkit.

use clap::{ArgAction, Command};
use codeb_core::vars::INPUT_PREFIX;
use std::ffi::OsString;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("input `{name}` must be true or false, got `{value}`")]
    NotBool { name: String, value: String },
}

fn input_value(long: &str, get: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let upper = long.to_uppercase();
    [
        format!("{INPUT_PREFIX}{upper}"),
        format!("{INPUT_PREFIX}{}", upper.replace('-', "_")),
    ]
    .iter()
    .find_map(|k| get(k))
    .map(|v| v.trim().to_owned())
    .filter(|v| !v.is_empty())
}

fn parse_bool(name: &str, value: &str) -> Result<bool, InputError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(InputError::NotBool {
            name: name.to_owned(),
            value: value.to_owned(),
        }),
    }
}

/// `args` with a `--flag value` appended for every flag of `cmd` (or of the subcommand named
/// by the first argument) that is not on the command line but has a non-empty input.
/// Repeatable flags take one value per non-empty line of the input.
pub fn args_with_inputs(
    cmd: &Command,
    args: impl IntoIterator<Item = OsString>,
) -> Result<Vec<OsString>, InputError> {
    args_with(cmd, args.into_iter().collect(), &|k| std::env::var(k).ok())
}

fn args_with(
    cmd: &Command,
    mut args: Vec<OsString>,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<OsString>, InputError> {
    let sub = args
        .get(1)
        .and_then(|a| a.to_str())
        .and_then(|name| cmd.find_subcommand(name));
    let cmd = sub.unwrap_or(cmd);
    let given = |long: &str| {
        args.iter().any(|a| {
            a.to_str()
                .is_some_and(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}=")))
        })
    };
    let mut extra: Vec<OsString> = Vec::new();
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") || given(long) {
            continue;
        }
        let Some(value) = input_value(long, get) else {
            continue;
        };
        match arg.get_action() {
            ArgAction::SetTrue => {
                if parse_bool(long, &value)? {
                    extra.push(format!("--{long}").into());
                }
            }
            ArgAction::SetFalse => {
                if !parse_bool(long, &value)? {
                    extra.push(format!("--{long}").into());
                }
            }
            ArgAction::Append => {
                for line in value.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    extra.push(format!("--{long}={line}").into());
                }
            }
            _ => extra.push(format!("--{long}={value}").into()),
        }
    }
    args.extend(extra);
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};
    use std::collections::HashMap;

    fn cmd() -> Command {
        Command::new("t")
            .arg(Arg::new("manifest").long("manifest"))
            .arg(
                Arg::new("no-host-check")
                    .long("no-host-check")
                    .action(ArgAction::SetTrue),
            )
            .arg(Arg::new("expect").long("expect").action(ArgAction::Append))
    }

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Vec<String>, InputError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let out = args_with(&cmd(), args.iter().map(OsString::from).collect(), &|k| {
            env.get(k).cloned()
        })?;
        Ok(out
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect())
    }

    #[test]
    fn inputs_become_flags() {
        let got = run(
            &["t"],
            &[
                ("INPUT_MANIFEST", "/m.yaml"),
                ("INPUT_NO-HOST-CHECK", "true"),
                ("INPUT_EXPECT", "version=abc\n\n status=ok \n"),
            ],
        )
        .expect("valid");
        assert_eq!(
            got,
            [
                "t",
                "--manifest=/m.yaml",
                "--no-host-check",
                "--expect=version=abc",
                "--expect=status=ok"
            ]
        );
    }

    #[test]
    fn command_line_wins_and_empty_is_unset() {
        let got = run(
            &["t", "--manifest", "/cli.yaml"],
            &[
                ("INPUT_MANIFEST", "/input.yaml"),
                ("INPUT_NO_HOST_CHECK", ""),
                ("INPUT_EXPECT", "  "),
            ],
        )
        .expect("valid");
        assert_eq!(got, ["t", "--manifest", "/cli.yaml"]);
        let got = run(&["t"], &[("INPUT_NO_HOST_CHECK", "false")]).expect("valid");
        assert_eq!(got, ["t"]);
    }

    #[test]
    fn bad_boolean_names_the_input() {
        let err = run(&["t"], &[("INPUT_NO_HOST_CHECK", "maybe")]).expect_err("not a bool");
        assert_eq!(
            err.to_string(),
            "input `no-host-check` must be true or false, got `maybe`"
        );
    }
}

//! `codeb-daemon`: see the library's docs for the commands and exit codes.

fn main() -> std::process::ExitCode {
    codeb_daemon::main()
}

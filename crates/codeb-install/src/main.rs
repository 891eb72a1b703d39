use std::process::ExitCode;

fn main() -> ExitCode {
    codeb_install::main()
}

use std::process::ExitCode;

fn main() -> ExitCode {
    codeb_port_validate::main()
}

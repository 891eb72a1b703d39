use std::process::ExitCode;

fn main() -> ExitCode {
    codeb_quadlet_update::main()
}

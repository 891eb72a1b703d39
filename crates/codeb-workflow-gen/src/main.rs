use std::process::ExitCode;

fn main() -> ExitCode {
    codeb_workflow_gen::cli::main()
}

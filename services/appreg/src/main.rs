//! The `appreg` binary: see `appreg --help`.

fn main() -> std::process::ExitCode {
    appreg::main()
}

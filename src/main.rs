//! The `contabo-rotator` binary: all work is in the library (`cli::main`).

fn main() -> std::process::ExitCode {
    contabo_rotator::cli::main()
}

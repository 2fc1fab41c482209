//! `cluster`: run an IPyparallel-style compute cluster. Everything is in the library
//! ([`cluster_cli::main_with`]); this binary only hands it the command line.

fn main() -> std::process::ExitCode {
    cluster_cli::main_with(std::env::args_os())
}

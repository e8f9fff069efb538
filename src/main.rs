//! The `pgstrata` binary (also installable as `pgbackrest`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut argv = Vec::new();
    for arg in std::env::args_os() {
        match arg.into_string() {
            Ok(a) => argv.push(a),
            Err(raw) => {
                eprintln!("ERROR: [031]: argument {raw:?} is not valid UTF-8");
                return ExitCode::from(31);
            }
        }
    }
    let env: Vec<(String, String)> =
        std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect();
    ExitCode::from(pgstrata::run(&argv, &env))
}

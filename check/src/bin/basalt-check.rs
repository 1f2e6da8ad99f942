//! `basalt-check <history.jsonl>`: checks a saved run again and prints the
//! verdict. Exits 0 when every check passed, 1 when a guarantee is broken,
//! 2 when undecided (a search ran out of budget), 3 when the file could not
//! be read.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use basalt_check::{check, Limits, Recording, Verdict};

const USAGE: &str =
    "usage: basalt-check <history.jsonl> [--max-states N] [--max-seconds S] [--no-shrink]";

fn main() -> ExitCode {
    let (path, limits) = match parse(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            return ExitCode::from(3);
        }
    };
    let report = match Recording::load(&path).and_then(|recording| check(&recording, &limits)) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("basalt-check: {error}");
            return ExitCode::from(3);
        }
    };
    print!("{report}");
    match report.verdict() {
        Verdict::Ok => ExitCode::SUCCESS,
        Verdict::Violated => ExitCode::from(1),
        Verdict::Unknown => ExitCode::from(2),
    }
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<(PathBuf, Limits), String> {
    let mut limits = Limits::default();
    let mut path = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--max-states" => limits.max_states_per_key = number(args.next(), &arg)?,
            "--max-seconds" => limits.max_time = Duration::from_secs(number(args.next(), &arg)?),
            "--no-shrink" => limits.shrink = false,
            "-h" | "--help" => return Err("checks a recorded etcd history".into()),
            _ if path.is_none() && !arg.starts_with('-') => path = Some(PathBuf::from(arg)),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    Ok((path.ok_or("no history file given")?, limits))
}

fn number(value: Option<String>, flag: &str) -> Result<u64, String> {
    let value = value.ok_or(format!("{flag} needs a number"))?;
    value
        .parse()
        .map_err(|_| format!("{flag} needs a number, not {value:?}"))
}

//! etcd's command line, parsed as etcd parses it: Go's `flag` package
//! syntax (`--flag=value`, `--flag value`, `-flag value`, a boolean alone
//! or `--flag=true|false`, `--` ends the flags), etcd's value types with
//! Go's error messages, then `ETCD_*` environment variables for the flags
//! not given (etcd's `pkg/flags.SetFlagsFromEnv`).
//!
//! ```text
//! let settings = flags::parse(&args)?;          // exit 2 on a bad flag
//! let notes = flags::apply_env(&mut settings, std::env::vars_os())?;
//! ```
//!
//! Invariant: a [`Settings`] holds a value of the right shape for every
//! flag in [`FLAGS`] (etcd's default where none was given), so readers
//! never fail on a flag name from the table.

use std::collections::BTreeMap;
use std::ffi::OsString;

use crate::flag_table::{Flag, Kind, FLAGS};

/// A flag's parsed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Bool(bool),
    Uint(u64),
    Int(i64),
    /// Nanoseconds (Go's `time.Duration`; may be negative).
    Nanos(i64),
    Text(String),
    List(Vec<String>),
    /// A legacy flag (no value).
    None,
}

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    /// `ETCD_…`, with the variable's name.
    Env(String),
    ConfigFile,
}

/// Every flag's value, and which were given.
#[derive(Debug, Clone)]
pub struct Settings {
    values: BTreeMap<&'static str, Value>,
    given: BTreeMap<&'static str, Source>,
    /// Positional arguments after the flags (etcd refuses them).
    pub rest: Vec<String>,
}

/// How a command line ends before a server runs.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// `-h`/`--help`: print the help, exit 0.
    Help,
    /// A flag etcd's parser refuses: print this and the usage, exit 2.
    Usage(String),
}

impl Settings {
    /// etcd's defaults for every flag.
    pub fn defaults() -> Settings {
        let mut values = BTreeMap::new();
        for flag in FLAGS {
            values.insert(flag.name, default_value(flag));
        }
        Settings {
            values,
            given: BTreeMap::new(),
            rest: Vec::new(),
        }
    }

    /// Sets `flag` from `text` with etcd's parser; the error is Go's
    /// `Value.Set` error (what follows "invalid value … for flag -x: ").
    pub fn set(&mut self, flag: &'static Flag, text: &str, from: Source) -> Result<(), String> {
        let value = parse_value(flag.kind, text)?;
        self.put(flag, value, from);
        Ok(())
    }

    /// Stores an already-typed value (config files).
    pub fn put(&mut self, flag: &'static Flag, value: Value, from: Source) {
        self.values.insert(flag.name, value);
        self.given.insert(flag.name, from);
    }

    /// Flags given (on the command line, by environment or config file),
    /// in name order.
    pub fn given(&self) -> impl Iterator<Item = (&'static str, &Source)> {
        self.given.iter().map(|(k, v)| (*k, v))
    }

    pub fn source(&self, name: &str) -> Option<&Source> {
        self.given.get(name)
    }

    pub fn is_given(&self, name: &str) -> bool {
        self.given.contains_key(name)
    }

    fn value(&self, name: &str) -> &Value {
        self.values
            .get(name)
            .unwrap_or_else(|| panic!("--{name} is not in the flag table"))
    }

    pub fn bool(&self, name: &str) -> bool {
        match self.value(name) {
            Value::Bool(b) => *b,
            other => panic!("--{name} is not a bool: {other:?}"),
        }
    }

    pub fn uint(&self, name: &str) -> u64 {
        match self.value(name) {
            Value::Uint(n) => *n,
            other => panic!("--{name} is not unsigned: {other:?}"),
        }
    }

    pub fn int(&self, name: &str) -> i64 {
        match self.value(name) {
            Value::Int(n) => *n,
            other => panic!("--{name} is not signed: {other:?}"),
        }
    }

    pub fn nanos(&self, name: &str) -> i64 {
        match self.value(name) {
            Value::Nanos(n) => *n,
            other => panic!("--{name} is not a duration: {other:?}"),
        }
    }

    pub fn text(&self, name: &str) -> &str {
        match self.value(name) {
            Value::Text(t) => t,
            other => panic!("--{name} is not text: {other:?}"),
        }
    }

    pub fn list(&self, name: &str) -> &[String] {
        match self.value(name) {
            Value::List(l) => l,
            other => panic!("--{name} is not a list: {other:?}"),
        }
    }

    /// Whether the value differs from etcd's default.
    pub fn differs_from_default(&self, flag: &'static Flag) -> bool {
        *self.value(flag.name) != default_value(flag)
    }
}

fn default_value(flag: &Flag) -> Value {
    match flag.kind {
        Kind::Legacy => Value::None,
        Kind::Spin => Value::Text(String::new()),
        kind => {
            // Defaults print with a note for the other version in a few
            // cases ("false (3.5: true)"): the value is the first word.
            let text = flag.default.split(" (").next().unwrap_or("");
            parse_value(kind, text)
                .unwrap_or_else(|e| panic!("default of --{} does not parse: {e}", flag.name))
        }
    }
}

/// Parses etcd's command line (without the program name).
pub fn parse(args: &[String]) -> Result<Settings, Stop> {
    let mut settings = Settings::defaults();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg.len() < 2 || !arg.starts_with('-') {
            break;
        }
        let minuses = if arg.starts_with("--") { 2 } else { 1 };
        if arg == "--" {
            i += 1;
            break;
        }
        let body = &arg[minuses..];
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(Stop::Usage(format!("bad flag syntax: {arg}")));
        }
        i += 1;
        // `=` cannot be the first character of a name (Go's rule).
        let (name, inline) = match body[1..].find('=') {
            Some(at) => (&body[..at + 1], Some(&body[at + 2..])),
            None => (body, None),
        };
        let Some(flag) = crate::flag_table::lookup(name) else {
            if name == "help" || name == "h" {
                return Err(Stop::Help);
            }
            return Err(Stop::Usage(format!(
                "flag provided but not defined: -{name}"
            )));
        };
        if flag.kind.is_bool() {
            let text = inline.unwrap_or("true");
            if let Err(e) = settings.set(flag, text, Source::Flag) {
                return Err(Stop::Usage(match inline {
                    Some(v) => format!("invalid boolean value {} for -{name}: {e}", go_quote(v)),
                    None => format!("invalid boolean flag {name}: {e}"),
                }));
            }
            continue;
        }
        let text = match inline {
            Some(v) => v,
            None if i < args.len() => {
                i += 1;
                &args[i - 1]
            }
            None => return Err(Stop::Usage(format!("flag needs an argument: -{name}"))),
        };
        if let Err(e) = settings.set(flag, text, Source::Flag) {
            return Err(Stop::Usage(format!(
                "invalid value {} for flag -{name}: {e}",
                go_quote(text)
            )));
        }
    }
    settings.rest = args[i..].to_vec();
    Ok(settings)
}

/// What applying the environment has to say, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EnvNotes {
    /// `recognized and used environment variable ETCD_X=v`.
    pub used: Vec<String>,
    /// `unrecognized environment variable ETCD_X=v`.
    pub unrecognized: Vec<String>,
}

/// etcd's name for a flag's environment variable.
pub fn env_name(flag: &str) -> String {
    format!("ETCD_{}", flag.to_uppercase().replace('-', "_"))
}

/// Sets every flag not given on the command line from its non-empty
/// `ETCD_*` variable, as etcd does. A variable for a flag that was given
/// is an error (etcd stops: "conflicting environment variable"); other
/// `ETCD_*` variables are reported as unrecognized.
pub fn apply_env(
    settings: &mut Settings,
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<EnvNotes, String> {
    let vars: Vec<(String, String)> = vars
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let on_command_line: Vec<String> = settings
        .given()
        .filter(|(_, s)| **s == Source::Flag)
        .map(|(name, _)| env_name(name))
        .collect();
    let mut used = BTreeMap::new();
    let mut notes = EnvNotes::default();
    // etcd visits the flags in name order and stops at the first bad value.
    let mut flags: Vec<&'static Flag> = FLAGS.iter().collect();
    flags.sort_by_key(|f| f.name);
    for flag in flags {
        let key = env_name(flag.name);
        if on_command_line.contains(&key) {
            continue;
        }
        let Some((_, text)) = vars.iter().find(|(k, _)| *k == key) else {
            continue;
        };
        if text.is_empty() {
            continue;
        }
        used.insert(key.clone(), ());
        settings
            .set(flag, text, Source::Env(key.clone()))
            .map_err(|e| format!("invalid value {} for {key}: {e}", go_quote(text)))?;
        notes.used.push(format!("{key}={text}"));
    }
    for (key, text) in &vars {
        if used.contains_key(key) {
            continue;
        }
        if on_command_line.contains(key) {
            return Err(format!(
                "conflicting environment variable {} is shadowed by corresponding command-line flag (either unset environment variable or disable flag)",
                go_quote(key)
            ));
        }
        if key.starts_with("ETCD_") {
            notes.unrecognized.push(format!("{key}={text}"));
        }
    }
    Ok(notes)
}

/// Go's `%q` for the strings flags see (printable ASCII mostly).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A value of `kind` from text, or Go's `Value.Set` error.
pub fn parse_value(kind: Kind, text: &str) -> Result<Value, String> {
    const PARSE: &str = "parse error";
    const RANGE: &str = "value out of range";
    let num = |e: NumError| match e {
        NumError::Syntax => PARSE.to_string(),
        NumError::Range => RANGE.to_string(),
    };
    Ok(match kind {
        Kind::Bool => Value::Bool(parse_go_bool(text).ok_or(PARSE)?),
        Kind::Legacy => Value::None,
        Kind::Uint | Kind::Uint64 => Value::Uint(parse_go_uint(text, 64).map_err(num)?),
        Kind::Int | Kind::Int64 => Value::Int(parse_go_int(text).map_err(num)?),
        Kind::Uint32 => Value::Uint(parse_go_uint(text, 32).map_err(|e| {
            let why = match e {
                NumError::Syntax => "invalid syntax",
                NumError::Range => RANGE,
            };
            format!("strconv.ParseUint: parsing {}: {why}", go_quote(text))
        })?),
        Kind::Duration => Value::Nanos(parse_go_duration(text).ok_or(PARSE)?),
        Kind::Text => Value::Text(text.to_string()),
        Kind::Urls { star } => Value::List(parse_urls(text, star)?),
        Kind::List { .. } => Value::List(if text.is_empty() {
            Vec::new()
        } else {
            text.split(',').map(str::to_string).collect()
        }),
        Kind::Choice(valid) => {
            if !valid.contains(&text) {
                return Err("invalid value".into());
            }
            Value::Text(text.to_string())
        }
        Kind::Choices(valid) => {
            let mut picked = Vec::new();
            for v in text.split(',') {
                if !valid.contains(&v) {
                    return Err(format!("invalid value {}", go_quote(v)));
                }
                picked.push(v.to_string());
            }
            picked.sort();
            Value::List(picked)
        }
        Kind::Spin => {
            parse_spin(text)?;
            Value::Text(text.to_string())
        }
    })
}

/// etcd's `UniqueURLs.Set`: `""` (and `*` where allowed) stand alone;
/// otherwise every comma-separated URL must be http/https/unix/unixs with
/// a host:port and no path (`types.NewURLs`).
fn parse_urls(text: &str, star: bool) -> Result<Vec<String>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    if star && text == "*" {
        return Ok(vec!["*".into()]);
    }
    let mut urls = Vec::new();
    for raw in text.split(',') {
        let url = raw.trim();
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        if !matches!(
            scheme.to_ascii_lowercase().as_str(),
            "http" | "https" | "unix" | "unixs"
        ) {
            return Err(format!(
                "URL scheme must be http, https, unix, or unixs: {url}"
            ));
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (host, path) = rest.split_at(end);
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        if !has_host_port(host) {
            return Err(format!(
                "URL address does not have the form \"host:port\": {url}"
            ));
        }
        let path = path.split(['?', '#']).next().unwrap_or("");
        if !path.is_empty() {
            return Err(format!("URL must not contain a path: {url}"));
        }
        if !urls.iter().any(|u| u == url) {
            urls.push(url.to_string());
        }
    }
    Ok(urls)
}

/// Go's `net.SplitHostPort` succeeds: `host:port` or `[v6]:port`.
fn has_host_port(host: &str) -> bool {
    if let Some(v6) = host.strip_prefix('[') {
        return match v6.split_once(']') {
            Some((_, after)) => after.starts_with(':') && !after[1..].contains(':'),
            None => false,
        };
    }
    host.matches(':').count() == 1 && !host.contains(']')
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumError {
    Syntax,
    Range,
}

/// Go's `strconv.ParseUint(text, 0, bits)`: `0x`, `0o`, `0b` and a
/// leading `0` (octal) pick the base; `_` may separate digits only then.
fn parse_go_uint(text: &str, bits: u32) -> Result<u64, NumError> {
    let (digits, radix, prefixed) = if let Some(r) = strip_prefix_ci(text, "0x") {
        (r, 16, true)
    } else if let Some(r) = strip_prefix_ci(text, "0b") {
        (r, 2, true)
    } else if let Some(r) = strip_prefix_ci(text, "0o") {
        (r, 8, true)
    } else if text.len() > 1 && text.starts_with('0') {
        (&text[1..], 8, true)
    } else {
        (text, 10, false)
    };
    if digits.is_empty() {
        return Err(NumError::Syntax);
    }
    if digits.contains('_') && (!prefixed || !underscores_ok(text)) {
        return Err(NumError::Syntax);
    }
    let mut n: u64 = 0;
    let mut overflow = false;
    for c in digits.chars().filter(|c| *c != '_') {
        let d = c.to_digit(radix).ok_or(NumError::Syntax)? as u64;
        match n.checked_mul(radix as u64).and_then(|n| n.checked_add(d)) {
            Some(v) => n = v,
            None => overflow = true,
        }
    }
    if overflow || (bits < 64 && n >> bits != 0) {
        return Err(NumError::Range);
    }
    Ok(n)
}

/// Go's `strconv.ParseInt(text, 0, 64)`.
fn parse_go_int(text: &str) -> Result<i64, NumError> {
    let (negative, magnitude) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let n = parse_go_uint(magnitude, 64)?;
    if negative {
        if n > i64::MAX as u64 + 1 {
            return Err(NumError::Range);
        }
        Ok((n as i64).wrapping_neg())
    } else {
        i64::try_from(n).map_err(|_| NumError::Range)
    }
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    (text.len() >= prefix.len() && text[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &text[prefix.len()..])
}

/// Go's `underscoreOK`: underscores only between digits (or after the
/// base prefix).
fn underscores_ok(text: &str) -> bool {
    let body = text.trim_start_matches(['+', '-']);
    let body = if body.len() >= 2
        && body.starts_with('0')
        && matches!(body.as_bytes()[1], b'x' | b'X' | b'b' | b'B' | b'o' | b'O')
    {
        &body[1..] // the base letter counts as a digit for this rule
    } else {
        body
    };
    !body.starts_with('_') && !body.ends_with('_') && !body.contains("__")
}

/// Go's `time.ParseDuration`, in nanoseconds.
pub fn parse_go_duration(text: &str) -> Option<i64> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int_part, after) = rest.split_at(int_end);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(f) => {
                let end = f.find(|c: char| !c.is_ascii_digit()).unwrap_or(f.len());
                f.split_at(end)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_end = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().ok()?
        };
        let mut frac: u128 = 0;
        let mut frac_scale: u128 = 1;
        for d in frac_part.chars().take(18) {
            frac = frac * 10 + d.to_digit(10)? as u128;
            frac_scale *= 10;
        }
        total = total.checked_add(whole.checked_mul(scale)? + frac * scale / frac_scale)?;
        if total > i64::MAX as u128 + u128::from(negative) {
            return None;
        }
        rest = after;
    }
    Some(if negative {
        (total as i128).wrapping_neg() as i64
    } else {
        total as i64
    })
}

/// Parses `50us`, `1ms`, `200ns` or a bare number of microseconds; capped at
/// one second, since a longer spin only burns a core.
pub fn parse_spin(text: &str) -> Result<std::time::Duration, String> {
    use std::time::Duration;
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("expected a duration like 50us or 1ms, got {text:?}"))?;
    let d = match unit {
        "" | "us" | "µs" => Duration::from_micros(n),
        "ns" => Duration::from_nanos(n),
        "ms" => Duration::from_millis(n),
        other => return Err(format!("unknown unit {other:?}: use ns, us or ms")),
    };
    if d > Duration::from_secs(1) {
        return Err(format!("{text} is over the 1s limit"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn usage(list: &[&str]) -> String {
        match parse(&args(list)) {
            Err(Stop::Usage(m)) => m,
            other => panic!("{list:?} parsed: {other:?}"),
        }
    }

    #[test]
    fn go_flag_syntax_forms_all_set_the_flag() {
        for form in [
            &["--name=x"][..],
            &["--name", "x"],
            &["-name", "x"],
            &["-name=x"],
        ] {
            let s = parse(&args(form)).unwrap();
            assert_eq!(s.text("name"), "x", "{form:?}");
            assert!(s.is_given("name"));
        }
        let s = parse(&args(&[
            "--client-cert-auth",
            "--auto-tls=false",
            "-peer-auto-tls=1",
        ]))
        .unwrap();
        assert!(s.bool("client-cert-auth"));
        assert!(!s.bool("auto-tls"));
        assert!(s.bool("peer-auto-tls"));
        // A boolean does not take the next argument: it is positional.
        let s = parse(&args(&["--client-cert-auth", "true"])).unwrap();
        assert_eq!(s.rest, ["true"]);
        // A non-boolean takes the next argument even if it looks like a flag.
        let s = parse(&args(&["--name", "--data-dir"])).unwrap();
        assert_eq!(s.text("name"), "--data-dir");
        let s = parse(&args(&["--", "--name=x"])).unwrap();
        assert_eq!(s.text("name"), "default");
        assert_eq!(s.rest, ["--name=x"]);
    }

    #[test]
    fn bad_flags_fail_with_gos_messages() {
        assert_eq!(usage(&["--bogus"]), "flag provided but not defined: -bogus");
        assert_eq!(
            usage(&["--heartbeat-interval=abc"]),
            "invalid value \"abc\" for flag -heartbeat-interval: parse error"
        );
        assert_eq!(
            usage(&["--client-cert-auth=maybe"]),
            "invalid boolean value \"maybe\" for -client-cert-auth: parse error"
        );
        assert_eq!(usage(&["--name"]), "flag needs an argument: -name");
        assert_eq!(usage(&["---x"]), "bad flag syntax: ---x");
        assert_eq!(usage(&["-=x"]), "bad flag syntax: -=x");
        assert_eq!(
            usage(&["--initial-cluster-state=foo"]),
            "invalid value \"foo\" for flag -initial-cluster-state: invalid value"
        );
        assert_eq!(
            usage(&["--max-concurrent-streams=-1"]),
            "invalid value \"-1\" for flag -max-concurrent-streams: strconv.ParseUint: parsing \"-1\": invalid syntax"
        );
        assert_eq!(
            usage(&["--listen-client-urls=foo"]),
            "invalid value \"foo\" for flag -listen-client-urls: URL scheme must be http, https, unix, or unixs: foo"
        );
        assert_eq!(
            usage(&["--listen-client-urls=http://127.0.0.1"]),
            "invalid value \"http://127.0.0.1\" for flag -listen-client-urls: URL address does not have the form \"host:port\": http://127.0.0.1"
        );
        assert_eq!(
            usage(&["--listen-client-urls=http://127.0.0.1:1/x"]),
            "invalid value \"http://127.0.0.1:1/x\" for flag -listen-client-urls: URL must not contain a path: http://127.0.0.1:1/x"
        );
        assert_eq!(
            usage(&["--v2-deprecation=x"]),
            "invalid value \"x\" for flag -v2-deprecation: invalid value \"x\""
        );
        assert_eq!(parse(&args(&["-h"])).unwrap_err(), Stop::Help);
        assert_eq!(parse(&args(&["--help"])).unwrap_err(), Stop::Help);
    }

    #[test]
    fn numbers_parse_as_go_parses_them() {
        assert_eq!(parse_go_uint("10", 64), Ok(10));
        assert_eq!(parse_go_uint("0x10", 64), Ok(16));
        assert_eq!(parse_go_uint("010", 64), Ok(8));
        assert_eq!(parse_go_uint("0b101", 64), Ok(5));
        assert_eq!(parse_go_uint("1_000", 64), Err(NumError::Syntax));
        assert_eq!(parse_go_uint("0x_10", 64), Ok(16));
        assert_eq!(parse_go_uint("-1", 64), Err(NumError::Syntax));
        assert_eq!(
            parse_go_uint("18446744073709551616", 64),
            Err(NumError::Range)
        );
        assert_eq!(parse_go_uint("4294967296", 32), Err(NumError::Range));
        assert_eq!(parse_go_int("-5"), Ok(-5));
        assert_eq!(parse_go_int("-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(parse_go_int("9223372036854775808"), Err(NumError::Range));
    }

    #[test]
    fn durations_parse_as_go_parses_them() {
        assert_eq!(parse_go_duration("0"), Some(0));
        assert_eq!(parse_go_duration("5s"), Some(5_000_000_000));
        assert_eq!(parse_go_duration("1h2m3.5s"), Some(3_723_500_000_000));
        assert_eq!(parse_go_duration("-1.5ms"), Some(-1_500_000));
        assert_eq!(parse_go_duration("100µs"), Some(100_000));
        assert_eq!(parse_go_duration(".5s"), Some(500_000_000));
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("s"), None);
        assert_eq!(parse_go_duration("1d"), None);
        assert_eq!(parse_go_duration("3000000h"), None);
    }

    fn env(list: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        list.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn environment_sets_flags_not_given_and_reports_the_rest() {
        let mut s = parse(&args(&["--data-dir=/d"])).unwrap();
        let notes = apply_env(
            &mut s,
            env(&[
                ("ETCD_NAME", "m1"),
                ("ETCD_CLIENT_CERT_AUTH", "true"),
                ("ETCD_BOGUS", "1"),
                ("ETCD_INITIAL_CLUSTER_TOKEN", ""),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(s.text("name"), "m1");
        assert!(s.bool("client-cert-auth"));
        assert_eq!(s.text("initial-cluster-token"), "etcd-cluster");
        assert_eq!(notes.used, ["ETCD_CLIENT_CERT_AUTH=true", "ETCD_NAME=m1"]);
        assert_eq!(
            notes.unrecognized,
            ["ETCD_BOGUS=1", "ETCD_INITIAL_CLUSTER_TOKEN="]
        );
    }

    #[test]
    fn environment_and_flag_for_the_same_setting_is_refused_as_etcd() {
        let mut s = parse(&args(&["--name=a"])).unwrap();
        let err = apply_env(&mut s, env(&[("ETCD_NAME", "b")])).unwrap_err();
        assert_eq!(
            err,
            "conflicting environment variable \"ETCD_NAME\" is shadowed by corresponding command-line flag (either unset environment variable or disable flag)"
        );
        let mut s = parse(&args(&[])).unwrap();
        let err = apply_env(&mut s, env(&[("ETCD_HEARTBEAT_INTERVAL", "abc")])).unwrap_err();
        assert_eq!(
            err,
            "invalid value \"abc\" for ETCD_HEARTBEAT_INTERVAL: parse error"
        );
    }

    #[test]
    fn every_default_parses() {
        let s = Settings::defaults();
        assert_eq!(s.uint("max-request-bytes"), 1_572_864);
        assert_eq!(s.nanos("grpc-keepalive-interval"), 7_200_000_000_000);
        assert_eq!(s.list("listen-client-urls"), ["http://localhost:2379"]);
        assert!(!s.bool("pre-vote"));
    }

    #[test]
    fn spin_durations_parse_with_units_and_limits() {
        use std::time::Duration;
        assert_eq!(parse_spin("50us"), Ok(Duration::from_micros(50)));
        assert_eq!(parse_spin("50"), Ok(Duration::from_micros(50)));
        assert_eq!(parse_spin("2ms"), Ok(Duration::from_millis(2)));
        assert_eq!(parse_spin("500ns"), Ok(Duration::from_nanos(500)));
        assert!(parse_spin("2s").is_err());
        assert!(parse_spin("5000ms").is_err());
        assert!(parse_spin("fast").is_err());
        assert!(parse_spin("").is_err());
    }
}

//! `basalt --help`: the usage, then every flag with etcd's default and
//! what basalt does with it (from the flag table, so it cannot drift).

use std::fmt::Write;

use crate::flag_table::{Kind, Treatment, Yaml, FLAGS};

/// What a flag error prints after its reason (etcd prints its usage).
pub const USAGE: &str = "Usage:

  basalt [flags]
    Start a basalt member: etcd's flags, ETCD_* environment variables.

  basalt --version
    Show the version (etcd's layout).

  basalt -h | --help
    Show every flag and what basalt does with it.

  basalt --config-file FILE
    Read etcd's YAML config file; other command line flags and environment variables are then ignored.";

/// The full help text.
pub fn text() -> String {
    let mut out = String::new();
    out.push_str(USAGE);
    out.push_str(
        "\n\nFlags: etcd 3.4's and 3.5's, with Go's syntax (--flag=value, --flag value, -flag value;\n\
         a boolean alone means true). Each reads ETCD_<NAME> from the environment when not given.\n\
         See docs/flags.md.\n\n",
    );
    let mut legacy = Vec::new();
    for flag in FLAGS {
        let what = match flag.treatment {
            Treatment::Acted(note) => note.to_string(),
            Treatment::NoEffect(why) => format!("[no effect in basalt] {why}"),
            Treatment::RefusedUnlessDefault(why) => {
                format!("[refused unless '{}'] {why}", flag.default)
            }
            Treatment::Legacy => {
                legacy.push(flag.name);
                continue;
            }
        };
        let default = match flag.kind {
            Kind::Spin => "''".to_string(),
            _ => format!("'{}'", flag.default),
        };
        let key = match flag.yaml {
            Yaml::Top => flag.name.to_string(),
            Yaml::Client(k) => format!("client-transport-security.{k}"),
            Yaml::Peer(k) => format!("peer-transport-security.{k}"),
            Yaml::None => "none".to_string(),
        };
        let _ = writeln!(
            out,
            "  --{} {default}  [{}]  file key: {key}\n    {what}",
            flag.name,
            flag.since.label()
        );
    }
    let _ = writeln!(
        out,
        "\nAccepted and ignored with a warning, as etcd does: {}",
        legacy
            .iter()
            .map(|n| format!("--{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    out
}

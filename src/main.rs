//! The `basalt` server binary: etcd's command line (every flag of etcd 3.4
//! and 3.5 with Go's syntax, `ETCD_*` environment variables, `--config-file`),
//! so an etcd unit file or kubeadm manifest starts basalt by changing the
//! binary name; plus basalt's own `--cores` and `--spin-before-park`.
//! What basalt does with each flag is in `flag_table.rs` and
//! `docs/flags.md`.
//!
//! With no flags it serves one member on 127.0.0.1:2379 with its data in
//! `./default.basalt`. SIGTERM or SIGINT stop it cleanly: no new calls,
//! in-flight calls finish, the store is checkpointed, exit status 0.

mod config_file;
mod flag_table;
mod flags;
mod help;
mod server_config;
mod signals;
mod version;
mod zap;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use basalt_net::Config;
use flags::{Settings, Stop};
use server_config::{LogOutput, Logging, Refusal};
use signals::StopSignals;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // Go's flag errors: the reason and the usage on stderr, status 2.
    let parsed = match flags::parse(&args) {
        Ok(s) => s,
        Err(Stop::Help) => {
            print!("{}", help::text());
            return ExitCode::SUCCESS;
        }
        Err(Stop::Usage(why)) => {
            eprintln!("{why}");
            eprintln!("{}", help::USAGE);
            return ExitCode::from(2);
        }
    };
    let prepared = match parsed.rest.first() {
        Some(extra) => Err(Refusal::from(format!("'{extra}' is not a valid flag"))),
        None if parsed.bool("version") => {
            print!("{}", version::text());
            return ExitCode::SUCCESS;
        }
        None => prepare(parsed),
    };
    let (prepared, logging) = match prepared {
        Ok(p) => match server_config::logging(&p.settings) {
            Ok(logging) => (Ok(p), logging),
            Err(refusal) => (Err(refusal), Logging::default()),
        },
        Err(refusal) => (Err(refusal), Logging::default()),
    };
    if let Err(e) = init_logging(&logging) {
        eprintln!("cannot open --log-outputs: {e}");
        return ExitCode::FAILURE;
    }
    let prepared = match prepared {
        Ok(p) => p,
        Err(refusal) => return refuse(refusal),
    };
    for line in &prepared.notes {
        line.log();
    }
    if let Err(refusal) = server_config::check(&prepared.settings) {
        return refuse(refusal);
    }
    for warning in server_config::warnings(&prepared.settings) {
        tracing::warn!("{warning}");
    }
    let cfg = match server_config::config(&prepared.settings) {
        Ok(cfg) => cfg,
        Err(e) => return refuse(Refusal::from(e)),
    };
    match prepared.settings.text("restore-snapshot") {
        "" => run(cfg),
        file => restore(std::path::Path::new(file), &prepared.settings, &cfg),
    }
}

/// Settings from the command line and the environment, or from a config
/// file, and what to log about where they came from.
struct Prepared {
    settings: Settings,
    notes: Vec<Note>,
}

enum Note {
    Info(String),
    Warn(String),
}

impl Note {
    fn log(&self) {
        match self {
            Note::Info(line) => tracing::info!("{line}"),
            Note::Warn(line) => tracing::warn!("{line}"),
        }
    }
}

/// etcd's order: a config file (`--config-file`, else `ETCD_CONFIG_FILE`)
/// replaces every other flag and variable; without one, `ETCD_*` variables
/// fill in the flags not given.
fn prepare(mut settings: Settings) -> Result<Prepared, Refusal> {
    let mut file = settings.text("config-file").to_string();
    if file.is_empty() {
        file = std::env::var(flags::env_name("config-file")).unwrap_or_default();
    }
    if !file.is_empty() {
        // basalt's one-shot restore is no server setting a file could
        // hold: ignoring it, as etcd ignores other flags, would start a
        // server instead of restoring.
        if settings.is_given("restore-snapshot") {
            return Err(Refusal::from(String::from(
                "--restore-snapshot cannot be used with a config file",
            )));
        }
        let loaded = config_file::load(std::path::Path::new(&file))?;
        let mut notes = vec![Note::Info(format!(
            "loaded server configuration from {file:?}, other configuration command line flags and environment variables will be ignored if provided"
        ))];
        for key in loaded.unknown_keys {
            notes.push(Note::Warn(format!(
                "config file key {key:?} is not one of etcd's: ignored (as etcd ignores it)"
            )));
        }
        return Ok(Prepared {
            settings: loaded.settings,
            notes,
        });
    }
    let env = flags::apply_env(&mut settings, std::env::vars_os())?;
    let notes = env
        .unrecognized
        .into_iter()
        .map(|v| Note::Warn(format!("unrecognized environment variable {v}")))
        .chain(
            env.used
                .into_iter()
                .map(|v| Note::Info(format!("recognized and used environment variable {v}"))),
        )
        .collect();
    Ok(Prepared { settings, notes })
}

/// etcd's words for settings it cannot start with; exit 1 (or etcd's).
fn refuse(refusal: Refusal) -> ExitCode {
    tracing::error!(
        "error verifying flags, {}. See 'basalt --help'.",
        refusal.message
    );
    if refusal
        .message
        .starts_with("--advertise-client-urls is required")
    {
        tracing::error!("{}", server_config::ADVERTISE_HINT);
    }
    ExitCode::from(refusal.exit)
}

/// Logs go to stderr (or `--log-outputs`), as etcd's do; colour codes only
/// for a person at a terminal, never into a file or a pipe (and never under
/// NO_COLOR). `RUST_LOG` overrides `--log-level`.
fn init_logging(logging: &Logging) -> std::io::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&logging.filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let mut writer: Option<BoxMakeWriter> = None;
    for output in &logging.outputs {
        let next = match output {
            LogOutput::Stderr => BoxMakeWriter::new(std::io::stderr),
            LogOutput::Stdout => BoxMakeWriter::new(std::io::stdout),
            LogOutput::File(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
                    })?;
                BoxMakeWriter::new(Arc::new(file))
            }
        };
        writer = Some(match writer {
            None => next,
            Some(w) => BoxMakeWriter::new(w.and(next)),
        });
    }
    let writer = writer.unwrap_or_else(|| BoxMakeWriter::new(std::io::stderr));
    let ansi = logging.outputs == [LogOutput::Stderr]
        && std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi && !logging.zap)
        // A log line that cannot be written is dropped: reporting it would
        // write to the same broken stderr (a panic in `eprintln!`), and a
        // closed log pipe must never stop the member.
        .log_internal_errors(false);
    if logging.zap {
        builder.event_format(zap::ZapFormat).init();
    } else {
        builder.init();
    }
    Ok(())
}

/// `--restore-snapshot FILE`: restore into `--data-dir`, then exit.
fn restore(file: &std::path::Path, settings: &Settings, cfg: &Config) -> ExitCode {
    // The cluster the restored member founds, as `etcdctl snapshot
    // restore` takes it from --name and --initial-cluster*.
    let cluster = match basalt_net::member::ClusterInfo::from_flags(
        &cfg.name,
        &cfg.initial_cluster(),
        &cfg.initial_cluster_token,
        &cfg.initial_advertise_peer_urls,
        &cfg.advertise_client_urls,
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "snapshot restore failed");
            return ExitCode::FAILURE;
        }
    };
    let restore_flags = basalt_net::snapshot_file::RestoreFlags {
        skip_hash_check: settings.bool("skip-hash-check"),
        cluster: Some(cluster),
    };
    match basalt_net::snapshot_file::restore(file, &cfg.data_dir, restore_flags) {
        Ok(what) => {
            tracing::info!(file = %file.display(), data_dir = %cfg.data_dir.display(), restored = %what, "snapshot restored");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "snapshot restore failed");
            ExitCode::FAILURE
        }
    }
}

/// Starts the server and serves until a stop signal or a failure.
fn run(cfg: Config) -> ExitCode {
    // Block the stop signals before any executor thread exists, so they
    // inherit the mask and the main thread alone receives them.
    let signals = match StopSignals::block() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot set up signal handling");
            return ExitCode::FAILURE;
        }
    };
    // Startup (store recovery, executors) runs on a thread of its own, so
    // a stop signal ends the process even while it is under way.
    let (started_tx, started) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("basalt-start".into())
        .spawn(move || {
            let _ = started_tx.send(basalt_net::start(cfg));
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "basalt failed to start");
        return ExitCode::FAILURE;
    }
    let server = loop {
        if let Some(sig) = signals.wait_for(Duration::from_millis(100)) {
            tracing::warn!(signal = sig, "stopping before startup finished");
            return ExitCode::from(128u8.saturating_add(sig as u8));
        }
        match started.try_recv() {
            Ok(Ok(s)) => break s,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "basalt failed to start");
                return ExitCode::FAILURE;
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => {}
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                tracing::error!("basalt failed to start: the startup thread died");
                return ExitCode::FAILURE;
            }
        }
    };
    let failure = loop {
        if let Some(sig) = signals.wait_for(Duration::from_millis(200)) {
            tracing::info!(
                signal = sig,
                "stopping: no new calls, finishing in-flight ones"
            );
            break None;
        }
        if let Some(why) = server.failure() {
            tracing::error!(error = %why, "stopping: the member cannot go on");
            break Some(why);
        }
    };
    if failure.is_some() {
        let _ = server.shutdown();
        return ExitCode::FAILURE;
    }
    match server.shutdown() {
        Ok(()) => {
            tracing::info!("basalt stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "basalt stopped with an error");
            ExitCode::FAILURE
        }
    }
}

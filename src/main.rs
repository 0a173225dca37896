use anyhow::Context;
use clap::{Parser, Subcommand};
use regwatch::commands::audit::{self as audit_cmd, FilterArgs};
use regwatch::commands::inventory::{
    self as inventory_cmd, OutputFormat as InventoryFormat, Sort as InventorySort,
};
use regwatch::commands::storage::{self as storage_cmd, StorageArgs};
use regwatch::config::report::Format;
use regwatch::config::{self, ConfigError};
use regwatch::logging::{self, LogFormat};
use regwatch::store::StoreError;
use std::path::PathBuf;
use std::process::ExitCode;

// See Cargo.toml: the allocator is the binary's choice, not the library's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for a configuration or argument the user must fix (sysexits EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit status for a database regwatch refuses to use (sysexits EX_DATAERR).
const EXIT_DATABASE: u8 = 65;

/// Watches private container registries: health, storage, failed pulls, password guessing,
/// and a tamper-evident audit trail of who pushed, pulled or deleted what.
#[derive(Parser)]
#[command(name = "regwatch", version = version_line(), propagate_version = true)]
struct Cli {
    /// Log output format (logs go to stderr; filter with RUST_LOG, e.g. RUST_LOG=regwatch=debug).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: watch the configured registries and serve /metrics, /healthz, /readyz.
    ///
    /// Without --config it watches http://127.0.0.1:5000, keeps its database in ./regwatch.db
    /// and listens on 127.0.0.1:10708. SIGHUP reloads the config; SIGTERM stops after
    /// committing everything already accepted.
    Run {
        /// The TOML config file (see packaging/regwatch.example.toml).
        #[arg(short, long, env = "REGWATCH_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a config file and print what would be watched (secrets are never printed).
    ///
    /// Exits 0 when the config is valid, 64 with every error (file:line:column: key) when not.
    Check {
        #[arg(short, long, env = "REGWATCH_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Query, export and verify the audit trail (reads the database; safe while `run` runs).
    #[command(subcommand)]
    Audit(Box<AuditCommand>),
    /// Poll the registries now and list repositories with tags, manifests and total /
    /// exclusive / shared bytes (shared layers counted once).
    ///
    /// Reads the registry API live (no running daemon needed; always fresh). Exclusive bytes
    /// are what deleting the repository would free. With --violations, lists repositories and
    /// tags outside the naming policy instead and exits 1 if there are any. With --tags, one
    /// row per image tag: its signature (verified / unverified / none against the registry's
    /// signature_keys), signatures, attestations and whether an SBOM is attached.
    Inventory {
        #[arg(short, long, env = "REGWATCH_CONFIG")]
        config: Option<PathBuf>,
        /// Only this registry (its name in the config).
        #[arg(long)]
        registry: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: InventoryFormat,
        #[arg(long, value_enum, default_value = "size")]
        sort: InventorySort,
        /// List naming-policy violations (repository_pattern, tag_pattern) instead.
        #[arg(long, conflicts_with = "tags")]
        violations: bool,
        /// One row per image tag with its signature verdict, signatures, attestations and
        /// SBOM (signature and attestation tags are folded into their image's row).
        #[arg(long)]
        tags: bool,
        /// With --tags: only tags not pulled for this long (`90d`), or never pulled and
        /// pushed before that (push and pull times from the daemon's database).
        #[arg(long, requires = "tags", value_parser = parse_duration_arg)]
        unused: Option<std::time::Duration>,
    },
    /// Retention: what `[[retention]]` policies would delete, and exactly what it frees.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Storage of each registry with a storage_root: usage, growth trend, days until full,
    /// blobs, reclaimable bytes (what garbage-collect would delete), upload debris, and the
    /// largest repositories. Walks the storage read-only; safe while the registry runs.
    Storage {
        #[arg(short, long, env = "REGWATCH_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        args: StorageArgs,
    },
    /// Alerting: send a test notification through a channel.
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// Scheduled reports (`[[report]]`): write one now.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Print the version and the git revision it was built from.
    Version,
}

#[derive(Subcommand)]
enum AlertsCommand {
    /// Send a test notification through one `[[channel]]` now (directly, not through the
    /// outbox) and say whether the receiver accepted it. Exits 1 if it did not.
    Test {
        #[arg(short, long, env = "REGWATCH_CONFIG")]
        config: Option<PathBuf>,
        /// The channel's name in the config.
        #[arg(long)]
        channel: String,
    },
}

#[derive(Subcommand)]
enum RetentionCommand {
    /// List the tags each policy would delete and `reclaimable_bytes`: exactly what deleting
    /// their manifests and then running `docker-registry garbage-collect` frees (blobs no
    /// kept manifest in any repository references). Polls live, reads the push and pull
    /// times the daemon stored; deletes nothing.
    Plan {
        #[arg(short, long, env = "REGWATCH_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        args: regwatch::commands::retention::PlanArgs,
    },
}

/// `--unused 90d`.
fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (e.g. 90d, 12h)"))
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Write a `[[report]]` now, exactly as its schedule would (same period up to now, same
    /// filters, same output file), and print where it went with the chain head.
    Run {
        #[arg(short, long, env = "REGWATCH_CONFIG")]
        config: Option<PathBuf>,
        /// The report's name in the config.
        name: String,
    },
}

/// Where the audit commands find the database.
#[derive(clap::Args)]
struct DbArgs {
    /// Read [database] (path or url) from this config.
    #[arg(short, long, env = "REGWATCH_CONFIG")]
    config: Option<PathBuf>,
    /// The database file itself (overrides the config).
    #[arg(long)]
    database: Option<PathBuf>,
}

impl DbArgs {
    /// The database to read; a config mistake is a [`ConfigError`], a URL the client
    /// refuses a [`StoreError`].
    fn store(&self) -> Result<Result<regwatch::store::Store, StoreError>, ConfigError> {
        match &self.database {
            Some(p) => Ok(Ok(regwatch::store::Store::sqlite(p))),
            None => config::load(self.config.as_deref())
                .map(|c| regwatch::store::Store::open(&c.database)),
        }
    }
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Show audit events as a table, or as one line per pull/push/delete with --grouped.
    Query {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        filter: FilterArgs,
        /// Most rows to show (0 = all).
        #[arg(long, default_value_t = 100)]
        limit: u64,
        /// One line per thing a person did ("bob pulled team/app:1.0 (4 blobs, …)").
        #[arg(long)]
        grouped: bool,
    },
    /// Export audit events (streamed; any number of rows).
    Export {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Write here (mode 0600) instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Walk the hash chain: OK with the row count and head hash, or the first row that does
    /// not match and why. Exits 1 when the chain is broken.
    Verify {
        #[command(flatten)]
        db: DbArgs,
        /// A head hash written down earlier (e.g. from a report): it must still be in the chain.
        #[arg(long)]
        expect_head: Option<String>,
    },
}

/// `audit export --format`: the export formats of `[[report]]` (config knows nothing of
/// the command line).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    Csv,
    Json,
    Ndjson,
    Html,
}

impl From<ExportFormat> for Format {
    fn from(f: ExportFormat) -> Format {
        match f {
            ExportFormat::Csv => Format::Csv,
            ExportFormat::Json => Format::Json,
            ExportFormat::Ndjson => Format::Ndjson,
            ExportFormat::Html => Format::Html,
        }
    }
}

fn version_line() -> &'static str {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (",
        env!("REGWATCH_REVISION"),
        ")"
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match cli.command {
        Command::Version => {
            println!("regwatch {}", version_line());
            ExitCode::SUCCESS
        }
        Command::Check { config } => with_config(config.as_deref(), |c| {
            for w in &c.warnings {
                eprintln!("warning: {w}");
            }
            print!("{}", c.summary());
            Ok(true)
        }),
        Command::Audit(cmd) => run_audit(*cmd),
        Command::Alerts(AlertsCommand::Test { config, channel }) => {
            with_config(config.as_deref(), |c| {
                regwatch::commands::alerts::test(&c, &channel).map(|()| true)
            })
        }
        Command::Report(ReportCommand::Run { config, name }) => {
            with_config(config.as_deref(), |c| {
                regwatch::commands::report::run(&c, &name)
            })
        }
        Command::Inventory {
            config,
            registry,
            format,
            sort,
            violations,
            tags,
            unused,
        } => with_config(config.as_deref(), |c| {
            let view = match (violations, tags) {
                (true, _) => inventory_cmd::View::Violations,
                (_, true) => inventory_cmd::View::Tags,
                _ => inventory_cmd::View::Repositories,
            };
            inventory_cmd::run(&c, registry.as_deref(), format, sort, view, unused)
        }),
        Command::Retention(RetentionCommand::Plan { config, args }) => {
            with_config(config.as_deref(), |c| {
                regwatch::commands::retention::run(&c, &args).map(|()| true)
            })
        }
        Command::Storage { config, args } => with_config(config.as_deref(), |c| {
            storage_cmd::run(&c, &args).map(|()| true)
        }),
        Command::Run { config } => {
            let path = config.clone();
            with_config(config.as_deref(), |c| run_daemon(path, c).map(|()| true))
        }
    }
}

/// `regwatch run`: the daemon on a multi-threaded runtime until SIGTERM or SIGINT.
fn run_daemon(config_path: Option<PathBuf>, config: config::Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("regwatch")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = regwatch::daemon::bind(&config).await?;
        let shutdown = regwatch::daemon::shutdown_signals()?;
        regwatch::daemon::run(listener, config_path, config, shutdown).await
    })
}

/// Loads the config (exit 64 with every mistake when it is invalid) and runs `command`.
fn with_config(
    path: Option<&std::path::Path>,
    command: impl FnOnce(config::Config) -> anyhow::Result<bool>,
) -> ExitCode {
    match config::load(path) {
        Ok(c) => finish(command(c)),
        Err(e) => config_failed(&e),
    }
}

/// A command's outcome as the exit status: `Ok(true)` 0, `Ok(false)` 1 (the command's own
/// "no", e.g. a broken chain), an error 65 for a database regwatch refuses, 1 otherwise.
/// A reader that went away (`regwatch audit export | head`) is not an error.
fn finish(result: anyhow::Result<bool>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<regwatch::commands::UsageError>().is_some() {
                return ExitCode::from(EXIT_CONFIG);
            }
            match e.downcast_ref::<StoreError>() {
                Some(
                    StoreError::Corrupt { .. }
                    | StoreError::TooNew { .. }
                    | StoreError::HistoryMissing { .. },
                ) => ExitCode::from(EXIT_DATABASE),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run_audit(cmd: AuditCommand) -> ExitCode {
    let store = match &cmd {
        AuditCommand::Query { db, .. }
        | AuditCommand::Export { db, .. }
        | AuditCommand::Verify { db, .. } => db.store(),
    };
    let store = match store {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return finish(Err(e.into())),
        Err(e) => return config_failed(&e),
    };
    finish(match cmd {
        AuditCommand::Query {
            filter,
            limit,
            grouped,
            ..
        } => audit_cmd::query(&store, &filter, limit, grouped).map(|_| true),
        AuditCommand::Export {
            filter,
            format,
            output,
            ..
        } => audit_cmd::export_to(&store, &filter, format.into(), output.as_ref()).map(|n| {
            if let Some(p) = output {
                eprintln!("{n} events written to {}", p.display());
            }
            true
        }),
        AuditCommand::Verify { expect_head, .. } => {
            audit_cmd::verify(&store, expect_head.as_deref())
        }
    })
}

fn config_failed(e: &ConfigError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(EXIT_CONFIG)
}

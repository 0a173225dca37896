use clap::{Parser, Subcommand};
use regwatch::audit::StoreError;
use regwatch::config::{self, ConfigError};
use regwatch::logging::{self, LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status for a configuration the user must fix (sysexits EX_USAGE).
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
    /// Print the version and the git revision it was built from.
    Version,
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
        Command::Check { config } => match config::load(config.as_deref()) {
            Ok(c) => {
                print!("{}", c.summary());
                ExitCode::SUCCESS
            }
            Err(e) => config_failed(&e),
        },
        Command::Run { config } => {
            let loaded = match config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => return config_failed(&e),
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("regwatch")
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(regwatch::daemon::run(config, loaded)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    match e.downcast_ref::<StoreError>() {
                        Some(StoreError::Corrupt { .. } | StoreError::TooNew { .. }) => {
                            ExitCode::from(EXIT_DATABASE)
                        }
                        _ => ExitCode::FAILURE,
                    }
                }
            }
        }
    }
}

fn config_failed(e: &ConfigError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(EXIT_CONFIG)
}

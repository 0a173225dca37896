//! SIGHUP: the file is validated first; an invalid one is reported and the running config
//! kept (`regwatch_config_last_reload_successful` 0). Settings that only apply at start-up
//! are named in the log when they change.

use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::model::{Action, Event, Source};
use std::path::Path;
use std::sync::Arc;
use time::OffsetDateTime;
use tokio::sync::watch;

/// Loads `path` (the built-in default without one) and publishes it if it is valid;
/// returns the `config_reload` event to record either way.
pub(super) fn reload(
    path: Option<&Path>,
    config_tx: &watch::Sender<Arc<Config>>,
    metrics: &Metrics,
    now: OffsetDateTime,
) -> Event {
    let event = Event::new(now, Action::ConfigReload, Source::Daemon);
    match config::load(path) {
        Ok(new) => {
            warn_restart_only(&config_tx.borrow(), &new);
            let registries = new.registries.len();
            config_tx.send_replace(Arc::new(new));
            metrics.reload_succeeded();
            tracing::info!(registries, "configuration reloaded");
            for w in &config_tx.borrow().warnings {
                tracing::warn!("{w}");
            }
            event.with_detail("reloaded")
        }
        Err(e) => {
            metrics.reload_failed();
            tracing::error!("configuration reload failed, keeping the running configuration:\n{e}");
            event.with_detail(format!("rejected: {} error(s)", e.diagnostics.len()))
        }
    }
}

/// Names the changes that take effect only after a restart.
fn warn_restart_only(old: &Config, new: &Config) {
    if new.server.listen != old.server.listen {
        tracing::warn!(
            old = %old.server.listen, new = %new.server.listen,
            "server.listen changed; the new address takes effect after a restart"
        );
    }
    if new.database.target != old.database.target {
        tracing::warn!(
            old = %old.database.target, new = %new.database.target,
            "database changed; the new database is used after a restart"
        );
    }
    if new.server.agent != old.server.agent {
        tracing::warn!(
            old = %old.server.agent, new = %new.server.agent,
            "server.agent changed; the new name is used after a restart"
        );
    }
    if new.listens != old.listens {
        tracing::warn!("[[listen]] changed; the new listeners start after a restart");
    }
    let before: Vec<String> = crate::sources::storage::monitored(old)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for (name, _) in crate::sources::storage::monitored(new) {
        if !before.contains(&name) {
            tracing::warn!(
                registry = %name,
                "storage monitoring of a registry that had no storage (storage_root, s3, registry_config) starts after a restart"
            );
        }
    }
}

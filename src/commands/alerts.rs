//! `regwatch alerts test --channel NAME`: one test notification, sent directly.

use crate::channels::{self, Notification};
use crate::config::Config;
use anyhow::Context;

pub fn test(config: &Config, channel: &str) -> anyhow::Result<()> {
    let Some(c) = config.channels.iter().find(|c| c.name == channel) else {
        let names: Vec<&str> = config.channels.iter().map(|c| c.name.as_str()).collect();
        anyhow::bail!(
            "no [[channel]] is named {channel:?} (configured: {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let client = reqwest::Client::builder()
        .timeout(c.timeout)
        .build()
        .context("building the HTTP client")?;
    let n = Notification::test(time::OffsetDateTime::now_utc());
    runtime
        .block_on(channels::deliver(c, &client, &n))
        .with_context(|| {
            format!(
                "channel {channel} ({}) did not accept the test notification",
                c.kind
            )
        })?;
    println!("channel {channel} ({}): test notification accepted", c.kind);
    Ok(())
}

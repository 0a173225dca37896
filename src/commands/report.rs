//! `regwatch report run NAME`: writes a `[[report]]` now, exactly as its schedule would,
//! and mails it through its channels.

use crate::config::Config;
use crate::report::scheduled;
use crate::store::Store;
use anyhow::Context;

/// Writes (and mails) the report; `Ok(false)` when a mail was not accepted (the file stays).
pub fn run(config: &Config, name: &str) -> anyhow::Result<bool> {
    let Some(report) = config.reports.iter().find(|r| r.name == name) else {
        let known: Vec<&str> = config.reports.iter().map(|r| r.name.as_str()).collect();
        anyhow::bail!(
            "no [[report]] is named {name:?} (configured: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    };
    let now = time::OffsetDateTime::now_utc();
    let w = scheduled::write(&Store::open(&config.database)?, report, now)
        .with_context(|| format!("report {name}"))?;
    println!(
        "wrote {} ({} events, chain head {})",
        w.path.display(),
        w.rows,
        w.head
    );
    if report.channels.is_empty() {
        return Ok(true);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the mailer")?;
    let sent = runtime.block_on(scheduled::mail(report, &w, now, &config.channels));
    let mut ok = true;
    for (channel, result) in sent {
        match result {
            Ok(()) => println!("mailed through {channel}"),
            Err(e) => {
                ok = false;
                eprintln!("error: report {name} not mailed through {channel}: {e}");
            }
        }
    }
    Ok(ok)
}

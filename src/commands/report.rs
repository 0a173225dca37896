//! `regwatch report run NAME`: writes a `[[report]]` now, as its schedule would, and mails
//! it through its channels. A retention report polls its registries live (the daemon's
//! latest plans live in the daemon).

use crate::config::Config;
use crate::config::report::{ReportConfig, ReportKind};
use crate::report::scheduled::{self, Summary, Written};
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
    let w = write(config, report, now).with_context(|| format!("report {name}"))?;
    match &w.summary {
        Summary::Audit { head } => println!(
            "wrote {} ({} events, chain head {head})",
            w.path.display(),
            w.rows
        ),
        Summary::Retention { lines, .. } => {
            println!("wrote {} ({} candidate tags)", w.path.display(), w.rows);
            for l in lines {
                println!("  {l}");
            }
        }
    }
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

fn write(
    config: &Config,
    report: &ReportConfig,
    now: time::OffsetDateTime,
) -> anyhow::Result<Written> {
    match &report.kind {
        ReportKind::Audit => Ok(scheduled::write(
            &Store::open(&config.database)?,
            report,
            now,
        )?),
        ReportKind::Retention { policies } => {
            let policies: Vec<_> = config
                .retention
                .iter()
                .filter(|p| policies.contains(&p.name))
                .collect();
            let plans: Vec<_> = super::retention::plans(config, &policies)?
                .into_iter()
                .map(|(_, p)| p)
                .collect();
            Ok(scheduled::write_retention(report, &plans, now)?)
        }
    }
}

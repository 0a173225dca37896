//! The self-contained HTML audit report: period, chain status and head, activity over time
//! (inline SVG), totals, failed logins, deletions and the full table. One file, no scripts,
//! no external resources. Built with `maud`, which escapes every value; the event tables
//! are streamed a row at a time, so memory stays flat on millions of rows.

use super::export::ExportError;
use crate::model::build::VERSION;
use crate::model::text::format_time;
use crate::store::{AuditRow, Filter, Reader, Verdict};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use std::io::Write;

/// The columns of the event tables, in order.
const HEADERS: [&str; 11] = [
    "id",
    "time",
    "registry",
    "action",
    "repository",
    "tag",
    "digest",
    "size",
    "actor",
    "remote_addr",
    "method",
];

/// Digests are shortened to this many characters (the full one is in the cell's title).
const DIGEST_SHOWN: usize = 19;

/// Most rows in the failed-logins and deletions sections (the full table has all).
const SECTION_ROWS: u64 = 1000;

/// Writes the report of the rows `filter` selects; returns how many there are.
pub fn report(db: &Reader, filter: &Filter, out: &mut dyn Write) -> Result<u64, ExportError> {
    write_head(db, filter, out)?;
    write_activity(db, filter, out)?;
    write_totals(db, filter, out)?;
    for (title, action) in [("Failed logins", "auth_failure"), ("Deletions", "delete")] {
        let mut f = filter.clone();
        f.action = Some(action.into());
        f.limit = Some(SECTION_ROWS);
        writeln!(out, "{}", html! { h2 { (title) } }.into_string())?;
        let n = table(db, &f, out)?;
        let note = match n {
            0 => Some("None in this period."),
            SECTION_ROWS => Some("First 1000 shown; the full table below has all."),
            _ => None,
        };
        if let Some(note) = note {
            writeln!(out, "{}", html! { p { (note) } }.into_string())?;
        }
    }
    writeln!(out, "{}", html! { h2 { "All events" } }.into_string())?;
    let n = table(db, filter, out)?;
    writeln!(out, "{}", html! { p { (n) " events." } }.into_string())?;
    out.write_all(b"</body></html>\n")?;
    Ok(n)
}

/// The document head and the table of what the report is: period, generator, filters,
/// chain status and head.
fn write_head(db: &Reader, filter: &Filter, out: &mut dyn Write) -> Result<(), ExportError> {
    let (rows_total, head) = db.head()?;
    let chain = match db.verify(None)? {
        Verdict::Ok { rows, .. } => {
            html! { span class="ok" { "verified" } ": " (rows) " rows, every link intact" }
        }
        Verdict::Broken { problem, .. } => {
            html! { span class="bad" { "BROKEN" } ": " (problem.to_string()) }
        }
    };
    let generated = format_time(time::OffsetDateTime::now_utc());
    let head_element = html! {
        head {
            meta charset="utf-8";
            title { "regwatch audit report" }
            style { (PreEscaped(CSS)) }
        }
    };
    let meta = html! {
        h1 { "Registry audit report" }
        table class="meta" {
            tr { th { "Period" } td { (period(db, filter)?) } }
            tr { th { "Generated" } td { (generated) " by regwatch " (VERSION) } }
            tr { th { "Filters" } td { (describe(filter)) } }
            tr { th { "Audit chain" } td { (chain) } }
            tr {
                th { "Chain head" }
                td {
                    code { (head) }
                    " after " (rows_total)
                    " rows (write it down: a later report must contain this chain)"
                }
            }
        }
    };
    // The body stays open: the sections are streamed after it.
    writeln!(
        out,
        "{}\n<html lang=\"en\">{}<body>\n{}",
        DOCTYPE.into_string(),
        head_element.into_string(),
        meta.into_string()
    )?;
    Ok(())
}

fn period(db: &Reader, filter: &Filter) -> Result<String, ExportError> {
    Ok(match (&filter.since, &filter.until) {
        (None, None) => match db.time_bounds(filter)? {
            (Some(a), Some(b)) => format!("{a} – {b} (everything recorded)"),
            _ => "no events".into(),
        },
        (s, u) => format!(
            "{} – {}",
            s.map(format_time).unwrap_or_else(|| "the beginning".into()),
            u.map(format_time).unwrap_or_else(|| "now".into())
        ),
    })
}

fn write_activity(db: &Reader, filter: &Filter, out: &mut dyn Write) -> Result<(), ExportError> {
    let span_days = match db.time_bounds(filter)? {
        (Some(a), Some(b)) if a.len() >= 10 && b.len() >= 10 => a[..10] != b[..10],
        _ => false,
    };
    let buckets = fill_gaps(
        db.activity(filter, if span_days { 10 } else { 13 })?,
        span_days,
    );
    let section = html! { h2 { "Activity over time" } (svg_bars(&buckets)) };
    writeln!(out, "{}", section.into_string())?;
    Ok(())
}

fn write_totals(db: &Reader, filter: &Filter, out: &mut dyn Write) -> Result<(), ExportError> {
    let mut columns = Vec::new();
    for (title, column) in [
        ("By action", "action"),
        ("By actor", "actor"),
        ("By repository", "repository"),
    ] {
        columns.push((title, column, db.totals_by(filter, column, 20)?));
    }
    let section = html! {
        div class="cols" {
            @for (title, column, totals) in &columns {
                div {
                    h2 { (title) }
                    table {
                        tr { th { (column) } th { "events" } }
                        @for (k, n) in totals {
                            tr { td { (k) } td class="n" { (n) } }
                        }
                    }
                }
            }
        }
    };
    writeln!(out, "{}", section.into_string())?;
    Ok(())
}

/// The rows `filter` selects as a table, streamed; nothing at all without rows.
fn table(db: &Reader, filter: &Filter, out: &mut dyn Write) -> Result<u64, ExportError> {
    let mut header_written = false;
    let n = db.events(filter, |r| -> Result<(), ExportError> {
        if !header_written {
            let header = html! { tr { @for h in HEADERS { th { (h) } } } };
            writeln!(out, "<table class=\"events\">{}", header.into_string())?;
            header_written = true;
        }
        writeln!(out, "{}", row(r).into_string())?;
        Ok(())
    })?;
    if header_written {
        out.write_all(b"</table>\n")?;
    }
    Ok(n)
}

fn row(r: &AuditRow) -> Markup {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    html! {
        tr {
            td { (r.id) }
            td { (r.time) }
            td { (text(&r.registry)) }
            td { (r.action) }
            td { (text(&r.repository)) }
            td { (text(&r.tag)) }
            (digest_cell(r.digest.as_deref().unwrap_or("")))
            td { @if let Some(s) = r.size { (s) } }
            td { (text(&r.actor)) }
            td { (text(&r.remote_addr)) }
            td { (text(&r.method)) }
        }
    }
}

pub(super) fn digest_cell(digest: &str) -> Markup {
    match digest.get(..DIGEST_SHOWN) {
        Some(short) if digest.len() > DIGEST_SHOWN => {
            html! { td title=(digest) { (short) "…" } }
        }
        _ => html! { td { (digest) } },
    }
}

fn describe(f: &Filter) -> String {
    let parts: Vec<String> = [
        ("actor", &f.actor),
        ("repository", &f.repository),
        ("action", &f.action),
        ("address", &f.address),
        ("registry", &f.registry),
        ("source", &f.source),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
    .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// Adds the empty hours (or days) between the busy ones, so the chart's x axis is time.
/// Spans of more than 1,000 buckets are left as they are.
fn fill_gaps(buckets: Vec<(String, i64)>, days: bool) -> Vec<(String, i64)> {
    let parse = |b: &str| -> Option<time::PrimitiveDateTime> {
        let d = time::Date::parse(
            b.get(..10)?,
            time::macros::format_description!("[year]-[month]-[day]"),
        )
        .ok()?;
        let h: u8 = if days {
            0
        } else {
            b.get(11..13)?.parse().ok()?
        };
        d.with_hms(h, 0, 0).ok()
    };
    let (Some(first), Some(last)) = (buckets.first(), buckets.last()) else {
        return buckets;
    };
    let (Some(a), Some(b)) = (parse(&first.0), parse(&last.0)) else {
        return buckets;
    };
    let step = if days {
        time::Duration::DAY
    } else {
        time::Duration::HOUR
    };
    if (b - a) / step > 1000.0 {
        return buckets;
    }
    let counts: std::collections::HashMap<String, i64> = buckets.into_iter().collect();
    let mut out = Vec::new();
    let mut t = a;
    while t <= b {
        let key = if days {
            format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
        } else {
            format!(
                "{:04}-{:02}-{:02}T{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour()
            )
        };
        out.push((key.clone(), counts.get(&key).copied().unwrap_or(0)));
        t += step;
    }
    out
}

/// A bar chart of event counts per bucket, as inline SVG.
fn svg_bars(buckets: &[(String, i64)]) -> Markup {
    let (Some(first), Some(last)) = (buckets.first(), buckets.last()) else {
        return html! { p { "No events." } };
    };
    let (w, h, pad) = (900.0_f64, 180.0_f64, 30.0_f64);
    let max = buckets.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64;
    let bw = (w - pad) / buckets.len() as f64;
    let one = |v: f64| format!("{v:.1}");
    html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(w) height=(h + 40.0) role="img"
            aria-label="events per period" {
            text x="0" y="12" class="axis" { (max as i64) }
            @for (i, (label, n)) in buckets.iter().enumerate() {
                @let bh = (*n as f64 / max) * (h - 20.0);
                rect x=(one(pad + i as f64 * bw)) y=(one(h - bh)) width=(one((bw - 1.0).max(1.0)))
                    height=(one(bh)) {
                    title { (label) ": " (n) }
                }
            }
            text x=(pad) y=(h + 16.0) class="axis" { (first.0) }
            text x=(w) y=(h + 16.0) class="axis" text-anchor="end" { (last.0) }
        }
    }
}

pub(super) const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}h1{margin:0 0 .5em}\
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:2px 6px;text-align:left}\
th{background:#f3f3f3}td.n{text-align:right}.meta th{width:9em}.cols{display:flex;gap:2em;flex-wrap:wrap}\
.events td{font-family:ui-monospace,monospace;font-size:12px}.ok{color:#060;font-weight:bold}\
.bad{color:#b00;font-weight:bold}svg rect{fill:#4a78b0}svg .axis{font-size:11px;fill:#555}code{font-size:12px}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_between_busy_hours_are_filled() {
        let filled = fill_gaps(
            vec![("2026-11-28T19".into(), 5), ("2026-11-28T22".into(), 1)],
            false,
        );
        assert_eq!(
            filled,
            vec![
                ("2026-11-28T19".to_string(), 5),
                ("2026-11-28T20".to_string(), 0),
                ("2026-11-28T21".to_string(), 0),
                ("2026-11-28T22".to_string(), 1)
            ]
        );
        let days = fill_gaps(
            vec![("2026-02-27".into(), 1), ("2026-03-01".into(), 2)],
            true,
        );
        assert_eq!(days.len(), 3);
        assert_eq!(days[1], ("2026-02-28".to_string(), 0));
    }

    #[test]
    fn svg_has_one_bar_per_bucket() {
        let s = svg_bars(&[("2026-11-28T10".into(), 3), ("2026-11-28T11".into(), 1)]).into_string();
        assert_eq!(s.matches("<rect").count(), 2);
        assert!(s.contains("<title>2026-11-28T10: 3</title>"));
    }

    #[test]
    fn values_are_escaped_and_long_digests_shortened() {
        let r = AuditRow {
            id: 7,
            time: "2026-11-28T10:00:00.000000Z".into(),
            registry: Some("main".into()),
            action: "pull".into(),
            repository: Some("team/<script>".into()),
            tag: None,
            digest: Some(format!("sha256:{}", "a".repeat(64))),
            media_type: None,
            size: Some(12),
            actor: Some("bob & eve".into()),
            remote_addr: None,
            user_agent: None,
            request_id: None,
            method: Some("GET".into()),
            source: "log".into(),
            status: None,
            event_id: None,
            detail: None,
            prev_hash: String::new(),
            hash: String::new(),
        };
        let html = row(&r).into_string();
        assert!(html.contains("team/&lt;script&gt;"), "{html}");
        assert!(html.contains("bob &amp; eve"), "{html}");
        assert!(html.contains("<td>12</td>"), "{html}");
        assert!(html.contains("sha256:aaaaaaaaaaaa…</td>"), "{html}");
    }
}

//! Exports of the audit trail: CSV, JSON, NDJSON and a self-contained HTML report. All stream
//! rows from SQLite to the writer, so memory stays flat on millions of rows.

use crate::config::report::Format;
use crate::store::query::{AuditRow, COLUMNS, Filter};
use crate::store::verify::{self, Verdict};
use rusqlite::Connection;
use std::io::{self, Write};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("reading the audit store: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("writing the export: {0}")]
    Io(#[from] io::Error),
}

/// Writes every row `filter` selects to `out` in `format`; returns the row count.
pub fn export(
    conn: &Connection,
    filter: &Filter,
    format: Format,
    out: &mut dyn Write,
) -> Result<u64, ExportError> {
    match format {
        Format::Csv => {
            write_csv_header(out)?;
            filter.for_each(conn, |r| write_csv_row(out, r))
        }
        Format::Ndjson => filter.for_each(conn, |r| -> Result<(), ExportError> {
            serde_json::to_writer(&mut *out, r).map_err(io::Error::from)?;
            out.write_all(b"\n")?;
            Ok(())
        }),
        Format::Json => {
            out.write_all(b"[")?;
            let mut first = true;
            let n = filter.for_each(conn, |r| -> Result<(), ExportError> {
                out.write_all(if first { b"\n" } else { b",\n" })?;
                first = false;
                serde_json::to_writer(&mut *out, r).map_err(io::Error::from)?;
                Ok(())
            })?;
            out.write_all(b"\n]\n")?;
            Ok(n)
        }
        Format::Html => html_report(conn, filter, out),
    }
}

pub fn write_csv_header(out: &mut dyn Write) -> Result<(), ExportError> {
    out.write_all(COLUMNS.join(",").as_bytes())?;
    out.write_all(b"\n")?;
    Ok(())
}

/// RFC 4180 quoting with `\n` line ends, as the sqlite3 CLI writes them. A cell that a spreadsheet would run as a formula (`=`, `+`, `-`, `@` at
/// the start; user agents and user names are attacker-controlled) gets a leading `'`.
pub fn write_csv_row(out: &mut dyn Write, row: &AuditRow) -> Result<(), ExportError> {
    for (i, field) in row.fields().iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        write_csv_field(out, field)?;
    }
    out.write_all(b"\n")?;
    Ok(())
}

fn write_csv_field(out: &mut dyn Write, field: &str) -> io::Result<()> {
    let formula = matches!(
        field.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    );
    // Quoting fields with spaces too is what the sqlite3 CLI does; byte-identical output makes
    // the two easy to compare.
    let needs_quotes = formula
        || field
            .bytes()
            .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r' | b' '));
    if !needs_quotes {
        return out.write_all(field.as_bytes());
    }
    out.write_all(b"\"")?;
    if formula {
        out.write_all(b"'")?;
    }
    for (i, part) in field.split('"').enumerate() {
        if i > 0 {
            out.write_all(b"\"\"")?;
        }
        out.write_all(part.as_bytes())?;
    }
    out.write_all(b"\"")
}

fn esc(s: &str) -> String {
    crate::http::escape(s)
}

/// The compliance report: period, chain status, totals, failed logins, deletions, a chart of
/// activity over time, and the full table. One file, no external resources.
fn html_report(
    conn: &Connection,
    filter: &Filter,
    out: &mut dyn Write,
) -> Result<u64, ExportError> {
    let (rows_total, head) = verify::head(conn)?;
    let chain = match verify::verify(conn, None)? {
        Verdict::Ok { rows, .. } => {
            format!("<span class=ok>verified</span>: {rows} rows, every link intact")
        }
        Verdict::Broken { problem, .. } => format!(
            "<span class=bad>BROKEN</span>: {}",
            esc(&problem.to_string())
        ),
    };
    let bounds = filter.time_bounds(conn)?;
    let period = match (&filter.since, &filter.until) {
        (None, None) => match &bounds {
            (Some(a), Some(b)) => format!("{a} – {b} (everything recorded)"),
            _ => "no events".into(),
        },
        (s, u) => format!(
            "{} – {}",
            s.map(crate::model::text::format_time)
                .unwrap_or_else(|| "the beginning".into()),
            u.map(crate::model::text::format_time)
                .unwrap_or_else(|| "now".into())
        ),
    };
    let generated = crate::model::text::format_time(time::OffsetDateTime::now_utc());
    write!(
        out,
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>regwatch audit report</title>\n<style>{CSS}</style></head><body>\n\
         <h1>Registry audit report</h1>\n<table class=meta>\
         <tr><th>Period</th><td>{}</td></tr>\
         <tr><th>Generated</th><td>{generated} by regwatch {}</td></tr>\
         <tr><th>Filters</th><td>{}</td></tr>\
         <tr><th>Audit chain</th><td>{chain}</td></tr>\
         <tr><th>Chain head</th><td><code>{head}</code> after {rows_total} rows (write it down: a later report must contain this chain)</td></tr>\
         </table>\n",
        esc(&period),
        crate::metrics::VERSION,
        esc(&describe(filter)),
    )?;

    writeln!(out, "<h2>Activity over time</h2>")?;
    let span_days = match &bounds {
        (Some(a), Some(b)) if a.len() >= 10 && b.len() >= 10 => a[..10] != b[..10],
        _ => false,
    };
    let buckets = fill_gaps(
        filter.activity(conn, if span_days { 10 } else { 13 })?,
        span_days,
    );
    out.write_all(svg_bars(&buckets).as_bytes())?;

    write!(out, "<div class=cols>")?;
    for (title, column) in [
        ("By action", "action"),
        ("By actor", "actor"),
        ("By repository", "repository"),
    ] {
        let totals = filter.totals_by(conn, column, 20)?;
        write!(
            out,
            "<div><h2>{title}</h2><table><tr><th>{column}</th><th>events</th></tr>"
        )?;
        for (k, n) in totals {
            write!(out, "<tr><td>{}</td><td class=n>{n}</td></tr>", esc(&k))?;
        }
        write!(out, "</table></div>")?;
    }
    writeln!(out, "</div>")?;

    for (title, action) in [("Failed logins", "auth_failure"), ("Deletions", "delete")] {
        let mut f = filter.clone();
        f.action = Some(action.into());
        f.limit = Some(1000);
        writeln!(out, "<h2>{title}</h2>")?;
        let n = table(conn, &f, out)?;
        if n == 0 {
            writeln!(out, "<p>None in this period.</p>")?;
        } else if n == 1000 {
            writeln!(
                out,
                "<p>First 1000 shown; the full table below has all.</p>"
            )?;
        }
    }
    writeln!(out, "<h2>All events</h2>")?;
    let n = table(conn, filter, out)?;
    writeln!(out, "<p>{n} events.</p>\n</body></html>")?;
    Ok(n)
}

fn table(conn: &Connection, filter: &Filter, out: &mut dyn Write) -> Result<u64, ExportError> {
    const SHOWN: [usize; 11] = [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 13];
    let mut header_written = false;
    let n = filter.for_each(conn, |r| -> Result<(), ExportError> {
        if !header_written {
            out.write_all(b"<table class=events><tr>")?;
            for i in SHOWN {
                write!(out, "<th>{}</th>", COLUMNS[i])?;
            }
            out.write_all(b"</tr>\n")?;
            header_written = true;
        }
        let fields = r.fields();
        out.write_all(b"<tr>")?;
        for i in SHOWN {
            let v = &fields[i];
            if i == 6 && v.len() > 19 {
                write!(out, "<td title=\"{}\">{}…</td>", esc(v), esc(&v[..19]))?;
            } else {
                write!(out, "<td>{}</td>", esc(v))?;
            }
        }
        out.write_all(b"</tr>\n")?;
        Ok(())
    })?;
    if header_written {
        out.write_all(b"</table>\n")?;
    }
    Ok(n)
}

fn describe(f: &Filter) -> String {
    let mut parts = Vec::new();
    let mut add = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            parts.push(format!("{k}={v}"));
        }
    };
    add("actor", &f.actor);
    add("repository", &f.repository);
    add("action", &f.action);
    add("address", &f.address);
    add("registry", &f.registry);
    add("source", &f.source);
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
fn svg_bars(buckets: &[(String, i64)]) -> String {
    if buckets.is_empty() {
        return "<p>No events.</p>\n".into();
    }
    let (w, h, pad) = (900.0_f64, 180.0_f64, 30.0_f64);
    let max = buckets.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64;
    let bw = (w - pad) / buckets.len() as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" role=img aria-label=\"events per period\">",
        h + 40.0
    );
    s.push_str(&format!(
        "<text x=\"0\" y=\"12\" class=axis>{}</text>",
        max as i64
    ));
    for (i, (label, n)) in buckets.iter().enumerate() {
        let bh = (*n as f64 / max) * (h - 20.0);
        let x = pad + i as f64 * bw;
        s.push_str(&format!(
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\"><title>{}: {n}</title></rect>",
            h - bh,
            (bw - 1.0).max(1.0),
            esc(label)
        ));
    }
    let first = &buckets[0].0;
    let last = &buckets[buckets.len() - 1].0;
    s.push_str(&format!(
        "<text x=\"{pad}\" y=\"{}\" class=axis>{}</text><text x=\"{w}\" y=\"{}\" class=axis text-anchor=end>{}</text></svg>\n",
        h + 16.0,
        esc(first),
        h + 16.0,
        esc(last)
    ));
    s
}

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}h1{margin:0 0 .5em}\
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:2px 6px;text-align:left}\
th{background:#f3f3f3}td.n{text-align:right}.meta th{width:9em}.cols{display:flex;gap:2em;flex-wrap:wrap}\
.events td{font-family:ui-monospace,monospace;font-size:12px}.ok{color:#060;font-weight:bold}\
.bad{color:#b00;font-weight:bold}svg rect{fill:#4a78b0}svg .axis{font-size:11px;fill:#555}code{font-size:12px}";

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(field: &str) -> String {
        let mut out = Vec::new();
        write_csv_field(&mut out, field).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_quotes_only_when_needed_and_defuses_formulas() {
        assert_eq!(csv("team/app"), "team/app");
        assert_eq!(csv("a,b"), "\"a,b\"");
        assert_eq!(csv("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv(""), "");
    }

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
        let s = svg_bars(&[("2026-11-28T10".into(), 3), ("2026-11-28T11".into(), 1)]);
        assert_eq!(s.matches("<rect").count(), 2);
        assert!(s.contains("<title>2026-11-28T10: 3</title>"));
    }
}

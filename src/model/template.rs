//! A deliberately small template language for summaries, descriptions and mail subjects:
//! `{{ name }}` is replaced, nothing else is interpreted (no logic a config file could abuse).
//!
//! Names: `rule`, `status`, `severity`, `value` (ratios also as `value_percent`),
//! `threshold`, `window`, `labels.NAME` (e.g. `labels.address`, `labels.registry`), and
//! `registry`, `address`, `user` as shorthands for those labels. Unknown names render empty.

use std::collections::BTreeMap;

pub struct Vars<'a> {
    pub rule: &'a str,
    pub status: &'a str,
    pub severity: &'a str,
    pub value: f64,
    pub threshold: f64,
    pub window: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// Numbers as people read them: `11`, not `11.0`; `0.0523` for ratios.
pub fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn lookup(name: &str, v: &Vars<'_>) -> String {
    match name {
        "rule" => v.rule.into(),
        "status" => v.status.into(),
        "severity" => v.severity.into(),
        "value" => number(v.value),
        "value_percent" => format!("{:.1} %", v.value * 100.0),
        "threshold" => number(v.threshold),
        "threshold_percent" => format!("{:.1} %", v.threshold * 100.0),
        "window" => v.window.into(),
        other => {
            let label = other.strip_prefix("labels.").unwrap_or(other);
            v.labels.get(label).cloned().unwrap_or_default()
        }
    }
}

pub fn render(template: &str, vars: &Vars<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        match after.find("}}") {
            Some(close) => {
                out.push_str(&lookup(after[..close].trim(), vars));
                rest = &after[close + 2..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_names_labels_and_numbers() {
        let mut labels = BTreeMap::new();
        labels.insert("address".to_string(), "10.0.0.5".to_string());
        labels.insert("registry".to_string(), "main".to_string());
        let v = Vars {
            rule: "auth",
            status: "firing",
            severity: "critical",
            value: 11.0,
            threshold: 10.0,
            window: "1m",
            labels: &labels,
        };
        assert_eq!(
            render(
                "[{{severity}}] {{ rule }}: {{value}} > {{ threshold }} in {{window}} from {{ labels.address }} on {{registry}}{{nope}} {{",
                &v
            ),
            "[critical] auth: 11 > 10 in 1m from 10.0.0.5 on main {{"
        );
        assert_eq!(number(0.052345), "0.0523");
    }
}

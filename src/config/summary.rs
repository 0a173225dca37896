//! What `regwatch check` prints for a valid config: one screen, one section per table, where
//! each secret came from but never its value, and of webhook URLs only scheme and host.

use super::channel::{ChannelConfig, ChannelKind};
use super::duration::humane;
use super::registry::RegistryConfig;
use super::rule::{RuleConfig, RuleKind};
use super::{Config, Origin};
use std::fmt::Write;

impl Config {
    /// What `regwatch check` prints: one screen, no secret values.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        self.server_lines(&mut s);
        self.registry_lines(&mut s);
        self.log_lines(&mut s);
        self.rule_lines(&mut s);
        self.channel_lines(&mut s);
        self.maintenance_lines(&mut s);
        self.retention_lines(&mut s);
        self.report_lines(&mut s);
        self.forward_lines(&mut s);
        s
    }

    /// Each `[[retention]]` policy with its keep rules, as a reader would check them.
    fn retention_lines(&self, s: &mut String) {
        if self.retention.is_empty() {
            return;
        }
        let _ = writeln!(s, "retention   {} policies", self.retention.len());
        for p in &self.retention {
            let mut keeps = Vec::new();
            if let Some(d) = p.keep_pulled_within {
                keeps.push(format!("pulled within {}", humane(d)));
            }
            if let Some(d) = p.keep_pushed_within {
                keeps.push(format!("pushed within {}", humane(d)));
            }
            if p.keep_last > 0 {
                keeps.push(format!("the newest {} per repository", p.keep_last));
            }
            if !p.protect_tags.is_empty() {
                keeps.push(format!("tags {}", p.protect_tags.join(", ")));
            }
            let repos = if p.repositories.is_empty() {
                "every repository".to_string()
            } else {
                p.repositories.join(", ")
            };
            let _ = writeln!(
                s,
                "  {:<12} registry {}, {repos}; keeps {}",
                p.name,
                p.registry,
                keeps.join(", ")
            );
        }
    }

    /// Forwarders (receiver host and transport; of a CloudEvents URL only scheme and host)
    /// and listeners.
    fn forward_lines(&self, s: &mut String) {
        use super::forward::ForwardKind;
        if !self.forwards.is_empty() {
            let _ = writeln!(s, "forwards    {}", self.forwards.len());
        }
        for f in &self.forwards {
            let target = match &f.kind {
                ForwardKind::Syslog(x) => {
                    format!("syslog {}:{} over {}", x.host, x.port, x.transport)
                }
                ForwardKind::CloudEvents(c) => {
                    let host = reqwest::Url::parse(&c.url)
                        .ok()
                        .map(|u| format!("{}://{}", u.scheme(), u.host_str().unwrap_or("")))
                        .unwrap_or_default();
                    let signed = c
                        .secret
                        .as_ref()
                        .map(|r| format!(", signed with the secret {}", r.source))
                        .unwrap_or_default();
                    format!("cloudevents {host}{signed}")
                }
            };
            let sel = &f.selection;
            let mut only = Vec::new();
            if !sel.actions.is_empty() {
                let a: Vec<&str> = sel.actions.iter().map(|a| a.as_str()).collect();
                only.push(format!("actions {}", a.join(", ")));
            }
            if !sel.repositories.is_empty() {
                only.push(format!("repositories {}", sel.repositories.join(", ")));
            }
            if !sel.registries.is_empty() {
                only.push(format!("registries {}", sel.registries.join(", ")));
            }
            let only = if only.is_empty() {
                "every row".to_string()
            } else {
                only.join("; ")
            };
            let _ = writeln!(
                s,
                "  {:<12} {target} ({only}; batches of {})",
                f.name, f.batch_size
            );
        }
        for l in &self.listens {
            let _ = writeln!(
                s,
                "listen      {} on {} (rows of registry {})",
                l.kind.as_str(),
                l.address,
                l.registry
            );
        }
    }

    fn server_lines(&self, s: &mut String) {
        let origin: &Origin = &self.origin;
        let _ = writeln!(s, "config      {origin}: OK");
        let token = match &self.server.api_token {
            Some(t) => format!("API token {}", t.source),
            None => "no API token (the audit API and /notifications will refuse requests)".into(),
        };
        let _ = writeln!(
            s,
            "listen      http://{} ({token}; request timeout {})",
            self.server.listen,
            humane(self.server.request_timeout)
        );
        let retention = self
            .database
            .retention
            .map(humane)
            .unwrap_or_else(|| "forever".into());
        let _ = writeln!(
            s,
            "database    {} (retention {retention})",
            self.database.target
        );
    }

    fn registry_lines(&self, s: &mut String) {
        let _ = writeln!(s, "registries  {}", self.registries.len());
        for r in &self.registries {
            let _ = writeln!(
                s,
                "  {:<12} {} ({}; probe every {}, inventory every {}, timeout {}, {} concurrent requests, catalog pages of {}{}{}{}{})",
                r.name,
                r.url,
                registry_auth(r),
                humane(r.probe_interval),
                humane(r.poll_interval),
                humane(r.timeout),
                r.concurrency,
                r.catalog_page_size,
                naming_policy(r),
                registry_storage(r),
                r.notifications_token
                    .as_ref()
                    .map(|t| format!(", notifications token {}", t.source))
                    .unwrap_or_default(),
                signature_keys(r)
            );
        }
    }

    fn log_lines(&self, s: &mut String) {
        if self.logs.is_empty() {
            return;
        }
        let _ = writeln!(s, "logs        {}", self.logs.len());
        for l in &self.logs {
            let _ = writeln!(
                s,
                "  {:<12} {} ({} for {}{})",
                l.name,
                l.path.display(),
                l.format_name,
                l.registry,
                if l.counts { "" } else { "; not counted" }
            );
        }
    }

    fn rule_lines(&self, s: &mut String) {
        if self.rules.is_empty() {
            return;
        }
        let _ = writeln!(s, "rules       {}", self.rules.len());
        for r in &self.rules {
            let _ = writeln!(
                s,
                "  {:<12} {} for {}; {} → {})",
                r.name,
                condition(r),
                humane(r.for_),
                r.severity,
                if r.channels.is_empty() {
                    "no channels".to_string()
                } else {
                    r.channels.join(", ")
                }
            );
        }
    }

    fn channel_lines(&self, s: &mut String) {
        if self.channels.is_empty() {
            return;
        }
        let _ = writeln!(s, "channels    {}", self.channels.len());
        for c in &self.channels {
            let _ = writeln!(
                s,
                "  {:<12} {} {}{}",
                c.name,
                c.kind,
                channel_target(c),
                channel_secret(c)
            );
        }
    }

    fn maintenance_lines(&self, s: &mut String) {
        for m in &self.maintenance {
            let _ = writeln!(
                s,
                "maintenance {} ({} UTC for {})",
                m.name,
                m.schedule,
                humane(m.duration)
            );
        }
    }

    fn report_lines(&self, s: &mut String) {
        if self.reports.is_empty() {
            return;
        }
        let _ = writeln!(s, "reports     {}", self.reports.len());
        for r in &self.reports {
            let what = match &r.kind {
                super::report::ReportKind::Audit => format!("of the last {}", humane(r.period)),
                super::report::ReportKind::Retention { policies } => {
                    format!("retention plan of {}", policies.join(", "))
                }
            };
            let _ = writeln!(
                s,
                "  {:<12} {} {what} at \"{}\" UTC to {}",
                r.name,
                r.format,
                r.schedule,
                r.output.display()
            );
        }
    }
}

fn registry_auth(r: &RegistryConfig) -> String {
    match (&r.username, &r.password) {
        (Some(u), Some(p)) => format!("user {u}, password {}", p.source),
        (Some(u), None) => format!("user {u}, no password"),
        _ => "anonymous".into(),
    }
}

fn naming_policy(r: &RegistryConfig) -> String {
    match (&r.repository_pattern, &r.tag_pattern) {
        (None, None) => String::new(),
        (repo, tag) => format!(
            ", naming policy{}{}",
            repo.as_ref()
                .map(|p| format!(" repositories {:?}", p.as_str()))
                .unwrap_or_default(),
            tag.as_ref()
                .map(|p| format!(" tags {:?}", p.as_str()))
                .unwrap_or_default()
        ),
    }
}

fn registry_storage(r: &RegistryConfig) -> String {
    let from = r
        .registry_config
        .as_ref()
        .map(|p| format!(" from {}", p.display()))
        .unwrap_or_default();
    let timing = format!(
        "walk every {}, uploads stale after {}, forecast over {}",
        humane(r.storage_interval),
        humane(r.upload_max_age),
        humane(r.forecast_window)
    );
    match (&r.storage_root, &r.s3) {
        (Some(p), _) => format!(
            ", storage {}{from} (usage every {}, {timing})",
            p.display(),
            humane(r.storage_usage_interval),
        ),
        (None, Some(s3)) => format!(
            ", storage {s3}{from} ({}, {timing})",
            match r.capacity_bytes {
                Some(c) => format!("capacity {}", crate::model::text::human_bytes(c)),
                None => "no capacity_bytes: no usage ratio or forecast".into(),
            }
        ),
        (None, None) => String::new(),
    }
}

/// Where a channel delivers: the SMTP server and recipients, or of a URL only scheme and
/// host (webhook URLs of Slack and Teams carry their token in the path, and check never
/// prints secrets).
fn channel_target(c: &ChannelConfig) -> String {
    match &c.kind {
        ChannelKind::Email(e) => format!(
            "{}:{} ({}) to {}",
            e.smtp_host,
            e.smtp_port
                .map(|p| p.to_string())
                .unwrap_or_else(|| "default port".into()),
            e.tls,
            e.to.join(", ")
        ),
        other => other
            .url()
            .and_then(|u| reqwest::Url::parse(u).ok())
            .map(|u| format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("")))
            .unwrap_or_default(),
    }
}

fn channel_secret(c: &ChannelConfig) -> String {
    match &c.kind {
        ChannelKind::Webhook {
            secret: Some(secret),
            ..
        } => format!(", signed with a secret {}", secret.source),
        ChannelKind::Email(e) => e
            .password
            .as_ref()
            .map(|p| format!(", password {}", p.source))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// What a rule fires on, up to its `for`: `auth_failures > 10 (window 1m,`,
/// `unsigned_image in prod/* (grace 10m,`.
fn condition(r: &RuleConfig) -> String {
    match r.kind {
        RuleKind::UnsignedImage => format!(
            "{} in {} (grace {},",
            r.kind,
            r.repositories.join(" "),
            humane(r.grace)
        ),
        _ => format!("{} > {} (window {},", r.kind, r.threshold, humane(r.window)),
    }
}

/// `, signatures verified with /etc/regwatch/cosign.pub`, or nothing without keys.
fn signature_keys(r: &RegistryConfig) -> String {
    if r.signature_keys.is_empty() {
        return String::new();
    }
    let names: Vec<&str> = r.signature_keys.iter().map(|k| k.name.as_str()).collect();
    format!(", signatures verified with {}", names.join(", "))
}

#[cfg(test)]
mod tests {
    use crate::config::{Origin, parse};
    use std::path::Path;

    const BASE: &str = "[[registry]]\nname = \"main\"\nurl = \"http://x\"\n";

    #[test]
    fn check_never_prints_webhook_urls_or_secrets() {
        let c = parse(
            &format!(
                "{BASE}[[channel]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T0/B0/SECRETTOKEN\"\n\
                 [[channel]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"https://h.example/x\"\nsecret = \"hmac-key\"\n"
            ),
            Origin::Embedded,
            Path::new("/"),
        )
        .unwrap();
        let s = c.summary();
        assert!(
            s.contains("chat         slack https://hooks.slack.com/…"),
            "{s}"
        );
        assert!(!s.contains("SECRETTOKEN"), "{s}");
        assert!(!s.contains("hmac-key"), "{s}");
        assert!(!format!("{c:?}").contains("hmac-key"));
    }
}

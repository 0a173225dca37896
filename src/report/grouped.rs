//! The readable view of the raw events: "bob pulled team/app:1.0 (3 blobs, 1.2 MB)".
//!
//! The registry emits one `pull` per manifest and per blob, `pull`s for the blob HEAD checks
//! a pusher makes (existence checks, not pulls: a manifest HEAD, though, resolves a tag and is
//! a pull), and two `delete`s for one manifest delete. Rows of regwatch's own requests (its
//! `regwatch/<version>` user agent, stored before regwatch dropped them) are left out. This folds them into one line per
//! thing a person did; the raw rows stay untouched in the store.

use crate::model::text::human_bytes;
use crate::store::AuditRow;
use std::collections::HashMap;

/// Events of one image pull or push arrive within this many seconds of each other.
const WINDOW_SECS: i64 = 60;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Activity {
    pub time: String,
    pub registry: Option<String>,
    pub actor: Option<String>,
    /// `pulled`, `pushed`, `deleted`, `mounted`, or the raw action for anything else.
    pub what: String,
    pub repository: Option<String>,
    /// The tag, or the digest where no tag was used.
    pub reference: Option<String>,
    pub digest: Option<String>,
    pub remote_addr: Option<String>,
    /// Blobs (layers, config) transferred as part of it.
    pub blobs: u64,
    pub bytes: u64,
    /// The ids of the raw rows folded into this line.
    pub row_ids: Vec<i64>,
}

/// The media type the registry gives blobs (layers, configs) in its notifications.
const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

fn is_manifest(media_type: Option<&str>) -> bool {
    media_type.is_some_and(|m| m != BLOB_MEDIA_TYPE)
}

fn seconds(time: &str) -> i64 {
    time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .unwrap_or(0)
}

type Key = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn key(r: &AuditRow) -> Key {
    (
        r.registry.clone(),
        r.actor.clone(),
        r.remote_addr.as_deref().map(strip_port),
        r.repository.clone(),
    )
}

/// `10.0.0.5:54158` → `10.0.0.5`: one client uses a new port per connection.
fn strip_port(addr: &str) -> String {
    match addr.rsplit_once(':') {
        Some((ip, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !ip.contains(':') => {
            ip.to_string()
        }
        _ => addr.to_string(),
    }
}

fn activity(r: &AuditRow, what: &str) -> Activity {
    Activity {
        time: r.time.clone(),
        registry: r.registry.clone(),
        actor: r.actor.clone(),
        what: what.to_string(),
        repository: r.repository.clone(),
        reference: r.tag.clone().or_else(|| r.digest.clone()),
        digest: r.digest.clone(),
        remote_addr: r.remote_addr.clone(),
        blobs: 0,
        bytes: r.size.unwrap_or(0).max(0) as u64,
        row_ids: vec![r.id],
    }
}

/// Folds rows (in id order) into activities (in time order).
#[derive(Default)]
pub struct Grouper {
    done: Vec<Activity>,
    /// The open pull per client and repository.
    pulls: HashMap<Key, (i64, Activity)>,
    /// Blobs uploaded or mounted, waiting for the manifest that completes the push.
    pending_push: HashMap<Key, (i64, Activity)>,
    /// A manifest delete by request id (digest and tag events share it).
    deletes: HashMap<String, usize>,
}

impl Grouper {
    pub fn push(&mut self, r: &AuditRow) {
        let t = seconds(&r.time);
        if crate::model::event::is_self_user_agent(r.user_agent.as_deref()) {
            return;
        }
        // Blob rows carry the octet-stream media type (log rows never record blob HEADs).
        let blob_check =
            r.method.as_deref() == Some("HEAD") && r.media_type.as_deref() == Some(BLOB_MEDIA_TYPE);
        match r.action.as_str() {
            "pull" if blob_check => {}
            "pull" if is_manifest(r.media_type.as_deref()) => {
                let k = key(r);
                if r.tag.is_none() {
                    // A child manifest of an index pulled just before belongs to it.
                    if let Some((last, open)) = self.pulls.get_mut(&k) {
                        if t - *last <= WINDOW_SECS {
                            open.bytes += r.size.unwrap_or(0).max(0) as u64;
                            open.row_ids.push(r.id);
                            *last = t;
                            return;
                        }
                    }
                }
                if let Some((_, prev)) = self.pulls.insert(k, (t, activity(r, "pulled"))) {
                    self.done.push(prev);
                }
            }
            "pull" => {
                if let Some((last, open)) = self.pulls.get_mut(&key(r)) {
                    if t - *last <= WINDOW_SECS {
                        open.blobs += 1;
                        open.bytes += r.size.unwrap_or(0).max(0) as u64;
                        open.row_ids.push(r.id);
                        *last = t;
                    }
                }
                // A lone blob GET with no manifest pull before it is not an image pull.
            }
            "push" | "mount" if r.method.as_deref() == Some("GET") => {}
            "push" | "mount" if !(r.tag.is_some() && is_manifest(r.media_type.as_deref())) => {
                let entry = self
                    .pending_push
                    .entry(key(r))
                    .or_insert_with(|| (t, activity(r, "pushed")));
                if t - entry.0 > WINDOW_SECS {
                    *entry = (t, activity(r, "pushed"));
                } else if entry.1.row_ids.last() != Some(&r.id) {
                    entry.1.row_ids.push(r.id);
                    entry.1.bytes += r.size.unwrap_or(0).max(0) as u64;
                }
                if !is_manifest(r.media_type.as_deref()) {
                    entry.1.blobs += 1;
                }
                entry.0 = t;
            }
            "push" => {
                let mut a = activity(r, "pushed");
                if let Some((last, pending)) = self.pending_push.remove(&key(r)) {
                    if t - last <= WINDOW_SECS {
                        a.blobs = pending.blobs;
                        a.bytes += pending.bytes;
                        let mut ids = pending.row_ids;
                        ids.push(r.id);
                        a.row_ids = ids;
                    }
                }
                self.done.push(a);
            }
            "delete" => match r.request_id.as_ref().and_then(|id| self.deletes.get(id)) {
                Some(&i) => {
                    let a = &mut self.done[i];
                    if r.tag.is_some() {
                        a.reference = r.tag.clone();
                    }
                    if a.digest.is_none() {
                        a.digest = r.digest.clone();
                    }
                    a.row_ids.push(r.id);
                }
                None => {
                    if let Some(id) = &r.request_id {
                        self.deletes.insert(id.clone(), self.done.len());
                    }
                    self.done.push(activity(r, "deleted"));
                }
            },
            other => self.done.push(activity(r, other)),
        }
    }

    pub fn finish(mut self) -> Vec<Activity> {
        self.done.extend(self.pulls.into_values().map(|(_, a)| a));
        // Blobs uploaded without a manifest (an abandoned push) still show.
        self.done
            .extend(self.pending_push.into_values().map(|(_, mut a)| {
                a.what = "uploaded blobs".into();
                a
            }));
        self.done
            .sort_by(|a, b| (a.time.as_str(), a.row_ids[0]).cmp(&(b.time.as_str(), b.row_ids[0])));
        self.done
    }
}

/// A one-line description: `bob pulled team/app:1.0 (2 blobs, 82.0 KiB) from 10.0.0.5`.
pub fn describe(a: &Activity) -> String {
    // regwatch's own events have no actor; requests without credentials are anonymous.
    let daemon = matches!(
        a.what.as_str(),
        "monitor_start" | "monitor_stop" | "config_reload"
    );
    let who = a
        .actor
        .as_deref()
        .unwrap_or(if daemon { "regwatch" } else { "(anonymous)" });
    let verb = match a.what.as_str() {
        "auth_failure" => "failed to log in",
        "monitor_start" => "started monitoring",
        "monitor_stop" => "stopped monitoring",
        "config_reload" => "reloaded its config",
        "tag_created" => "saw a new tag",
        "tag_moved" => "saw a tag move",
        "tag_deleted" => "saw a tag disappear",
        "repository_created" => "saw a new repository",
        "repository_deleted" => "saw a repository disappear",
        "signature_attached" => "saw a signature attached to",
        other => other,
    };
    let what = match (&a.repository, &a.reference) {
        (Some(r), Some(t)) if t.starts_with("sha256:") => format!("{r}@{}", &t[..t.len().min(19)]),
        (Some(r), Some(t)) => format!("{r}:{t}"),
        (Some(r), None) => r.clone(),
        _ => String::new(),
    };
    let size = if a.blobs > 0 {
        format!(
            " ({} blob{}, {})",
            a.blobs,
            if a.blobs == 1 { "" } else { "s" },
            human_bytes(a.bytes)
        )
    } else {
        String::new()
    };
    let from = a
        .remote_addr
        .as_deref()
        .map(|x| format!(" from {x}"))
        .unwrap_or_default();
    let what = if what.is_empty() {
        String::new()
    } else {
        format!(" {what}")
    };
    format!("{who} {verb}{what}{size}{from}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::notification;

    fn rows_from_samples() -> Vec<AuditRow> {
        let text = include_str!("../../tests/fixtures/notifications.ndjson");
        text.lines()
            .flat_map(|l| notification::parse(l.as_bytes(), "main").unwrap())
            .enumerate()
            .map(|(i, e)| AuditRow {
                id: i as i64 + 1,
                time: crate::model::text::format_time(e.time),
                registry: e.registry,
                action: e.action.as_str().into(),
                repository: e.repository,
                tag: e.tag,
                digest: e.digest,
                media_type: e.media_type,
                size: e.size.map(|s| s as i64),
                actor: e.actor,
                remote_addr: e.remote_addr,
                user_agent: e.user_agent,
                request_id: e.request_id,
                method: e.method,
                source: "notification".into(),
                status: None,
                event_id: e.event_id,
                detail: e.detail,
                prev_hash: String::new(),
                hash: String::new(),
            })
            .collect()
    }

    #[test]
    fn the_sample_scenario_reads_as_what_people_did() {
        let mut g = Grouper::default();
        for r in rows_from_samples() {
            g.push(&r);
        }
        let lines: Vec<String> = g.finish().iter().map(describe).collect();
        let has = |prefix: &str| lines.iter().any(|l| l.starts_with(prefix));
        // An OCI image push/pull moves its config and layers: base has 2 layers, app 3.
        assert!(
            has("alice pushed team/base:1.0 (3 blobs, 257.8 KiB) from 127.0.0.1"),
            "{lines:#?}"
        );
        assert!(
            has("bob pulled team/app:1.0 (4 blobs, 322.8 KiB) from 127.0.0.1"),
            "{lines:#?}"
        );
        assert!(has("bob pulled team/multi:1.1"), "{lines:#?}");
        assert!(has("alice deleted team/app:1.0"), "{lines:#?}");
        // The blob HEAD checks skopeo makes while pushing are not pulls: alice pushed
        // team/base, team/app and tools/tool and never pulled them...
        for repo in ["tools/tool", "team/multi"] {
            assert!(
                !lines
                    .iter()
                    .any(|l| l.starts_with(&format!("alice pulled {repo}"))),
                "{lines:#?}"
            );
        }
        // ...but her one `curl -I` of the team/app:1.0 manifest (traffic.log, "HEAD
        // manifest") resolved the tag: a pull, without blobs.
        let alice_app: Vec<&String> = lines
            .iter()
            .filter(|l| l.starts_with("alice pulled team/app"))
            .collect();
        assert_eq!(
            alice_app,
            ["alice pulled team/app:1.0 from 127.0.0.1"],
            "{lines:#?}"
        );
        assert!(
            has("alice deleted scratch/doomed:1.0 from 127.0.0.1:48250"),
            "{lines:#?}"
        );
    }

    #[test]
    fn strips_ports_but_not_ipv6() {
        assert_eq!(strip_port("127.0.0.1:54158"), "127.0.0.1");
        assert_eq!(strip_port("127.0.0.1"), "127.0.0.1");
        assert_eq!(strip_port("[::1]:80"), "[::1]:80");
    }
}

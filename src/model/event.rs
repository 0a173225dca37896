//! The one event type every source produces and every consumer (audit store, metrics,
//! rules) reads.

use time::OffsetDateTime;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Push,
    Pull,
    Mount,
    Delete,
    AuthFailure,
    /// regwatch itself started watching (so gaps in monitoring show in the audit trail).
    MonitorStart,
    /// regwatch stopped watching.
    MonitorStop,
    /// The configuration was reloaded (SIGHUP).
    ConfigReload,
    /// A poll found a tag that the previous poll did not (source `poll`). Distinct from
    /// `push`: a poll sees a state change, not a request, and knows no actor; keeping them
    /// apart means "who pushed" questions never count a change twice when both
    /// notifications and polling are on.
    TagCreated,
    /// A poll found a tag pointing at another manifest (`digest` new, `detail` the old one).
    TagMoved,
    /// A poll no longer found a tag (`digest` is the manifest it pointed at).
    TagDeleted,
    /// A poll found a repository the previous poll did not.
    RepositoryCreated,
    /// A poll no longer found a repository in the catalog.
    RepositoryDeleted,
    /// A poll found a signature attached to an image it had seen before without it
    /// (`digest` is the image, `detail` what is attached now and whether it verifies).
    SignatureAttached,
}

impl Action {
    pub const ALL: [Action; 14] = [
        Action::Push,
        Action::Pull,
        Action::Mount,
        Action::Delete,
        Action::AuthFailure,
        Action::MonitorStart,
        Action::MonitorStop,
        Action::ConfigReload,
        Action::TagCreated,
        Action::TagMoved,
        Action::TagDeleted,
        Action::RepositoryCreated,
        Action::RepositoryDeleted,
        Action::SignatureAttached,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::Pull => "pull",
            Action::Mount => "mount",
            Action::Delete => "delete",
            Action::AuthFailure => "auth_failure",
            Action::MonitorStart => "monitor_start",
            Action::MonitorStop => "monitor_stop",
            Action::ConfigReload => "config_reload",
            Action::TagCreated => "tag_created",
            Action::TagMoved => "tag_moved",
            Action::TagDeleted => "tag_deleted",
            Action::RepositoryCreated => "repository_created",
            Action::RepositoryDeleted => "repository_deleted",
            Action::SignatureAttached => "signature_attached",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// Which part of regwatch saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The registry's notification webhook.
    Notification,
    /// A difference between two polls of the registry API.
    Poll,
    /// A tailed log file.
    Log,
    /// regwatch itself.
    Daemon,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Notification => "notification",
            Source::Poll => "poll",
            Source::Log => "log",
            Source::Daemon => "daemon",
        }
    }

    /// The source stored as `s` (see [`as_str`](Self::as_str)).
    pub fn parse(s: &str) -> Option<Source> {
        [
            Source::Notification,
            Source::Poll,
            Source::Log,
            Source::Daemon,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// One thing that happened at a registry (or to regwatch), with everything the audit trail
/// records about it. Fields a source does not know stay `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time: OffsetDateTime,
    /// The configured registry name; `None` for regwatch's own events.
    pub registry: Option<String>,
    pub action: Action,
    pub repository: Option<String>,
    pub tag: Option<String>,
    pub digest: Option<String>,
    pub media_type: Option<String>,
    pub size: Option<u64>,
    pub actor: Option<String>,
    pub remote_addr: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// The HTTP method of the request behind the event (a `pull` by `HEAD` is only a check).
    pub method: Option<String>,
    pub source: Source,
    /// HTTP status, where the source knows it.
    pub status: Option<u16>,
    /// The source's own id (a notification event id), used to store each event once.
    pub event_id: Option<String>,
    /// Free-form context (e.g. the log file, the reload outcome).
    pub detail: Option<String>,
}

impl Event {
    /// An event with only the required fields set.
    pub fn new(time: OffsetDateTime, action: Action, source: Source) -> Self {
        Event {
            time,
            registry: None,
            action,
            repository: None,
            tag: None,
            digest: None,
            media_type: None,
            size: None,
            actor: None,
            remote_addr: None,
            user_agent: None,
            request_id: None,
            method: None,
            source,
            status: None,
            event_id: None,
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// Whether a request came from regwatch itself (its `regwatch/<version>` user agent).
pub fn is_self_user_agent(user_agent: Option<&str>) -> bool {
    user_agent.is_some_and(|ua| ua.starts_with(super::SELF_USER_AGENT_PREFIX))
}

//! Layer 3: the audit trail rendered for people: exports (CSV, JSON, NDJSON, HTML), the
//! grouped "who did what" view, retention plans, and scheduled reports of either.

pub mod export;
pub mod grouped;
pub mod html;
pub mod retention;
pub mod scheduled;

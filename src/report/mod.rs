//! Layer 3: the audit trail rendered for people: exports (CSV, JSON, NDJSON, HTML), the
//! grouped "who did what" view, and scheduled reports.

pub mod export;
pub mod grouped;
pub mod html;
pub mod scheduled;

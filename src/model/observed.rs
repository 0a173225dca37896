//! The latest measurements of each registry that alert rules judge: whether its probe
//! succeeded, how full its storage is and when it will be full. The sources that take the
//! measurements write them here (and into their gauges, from the same values); the alert
//! evaluator reads them here, never back out of the metrics.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// One registry's latest measurements; `None` until first measured (or when not measured
/// at all, e.g. no storage configured).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observation {
    /// The last `GET /v2/` probe succeeded.
    pub up: Option<bool>,
    /// used / (used + available) of the storage.
    pub storage_used_ratio: Option<f64>,
    /// Days until the storage is full at the current trend; +Inf when not growing, `None`
    /// without enough history.
    pub storage_days_until_full: Option<f64>,
}

/// Every registry's latest measurements, shared by the sources (writers) and the evaluator.
#[derive(Debug, Clone, Default)]
pub struct Observations(Arc<RwLock<BTreeMap<String, Observation>>>);

impl Observations {
    /// The latest measurements of `registry` (all `None` if it was never measured).
    pub fn get(&self, registry: &str) -> Observation {
        self.0
            .read()
            .expect("observations lock")
            .get(registry)
            .copied()
            .unwrap_or_default()
    }

    /// Changes the measurements of `registry` in place.
    pub fn update(&self, registry: &str, f: impl FnOnce(&mut Observation)) {
        let mut map = self.0.write().expect("observations lock");
        f(map.entry(registry.to_string()).or_default());
    }
}

//! Per-op call counts, and (when enabled) wall time, FLOPs and bytes, collected at `Device::exec`.

use super::OpCost;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Debug, Default)]
pub struct OpStat {
    pub calls: u64,
    pub time: Duration,
    pub flops: f64,
    pub bytes: f64,
}

#[derive(Default)]
pub struct Profiler {
    enabled: AtomicBool,
    stats: Mutex<BTreeMap<&'static str, OpStat>>,
}

impl Profiler {
    pub fn enable(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }
    pub fn count(&self, name: &'static str) {
        self.stats.lock().unwrap().entry(name).or_default().calls += 1;
    }
    pub fn record(&self, name: &'static str, cost: OpCost, time: Duration) {
        let mut s = self.stats.lock().unwrap();
        let e = s.entry(name).or_default();
        e.calls += 1;
        e.time += time;
        e.flops += cost.flops;
        e.bytes += cost.bytes;
    }
    pub fn reset(&self) {
        self.stats.lock().unwrap().clear();
    }
    pub fn snapshot(&self) -> BTreeMap<&'static str, OpStat> {
        self.stats.lock().unwrap().clone()
    }
    pub fn total_calls(&self) -> u64 {
        self.stats.lock().unwrap().values().map(|s| s.calls).sum()
    }

    /// A readable per-op table (time-sorted).
    pub fn table(&self) -> String {
        let s = self.snapshot();
        let mut rows: Vec<_> = s.iter().collect();
        rows.sort_by(|a, b| b.1.time.cmp(&a.1.time));
        let total: f64 = rows.iter().map(|r| r.1.time.as_secs_f64()).sum();
        let mut out = format!(
            "{:<30} {:>8} {:>11} {:>10} {:>9} {:>9} {:>6}\n",
            "op", "calls", "total ms", "mean µs", "GFLOP/s", "GB/s", "%time"
        );
        for (name, st) in rows {
            let secs = st.time.as_secs_f64();
            let rate = |x: f64| if secs > 0.0 { x / secs / 1e9 } else { 0.0 };
            out += &format!(
                "{:<30} {:>8} {:>11.2} {:>10.1} {:>9.1} {:>9.2} {:>6.1}\n",
                name,
                st.calls,
                secs * 1e3,
                secs * 1e6 / st.calls.max(1) as f64,
                rate(st.flops),
                rate(st.bytes),
                if total > 0.0 { 100.0 * secs / total } else { 0.0 }
            );
        }
        out
    }
}

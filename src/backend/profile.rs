//! Per-op call counts, and (when enabled) time, FLOPs and bytes, collected at `Device::exec`; host
//! phases (`phase`); and optionally a Chrome/Perfetto trace (Trace Event Format) of both.

use super::OpCost;
use crate::machine::Peaks;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How a backend's op times are measured (labelled in the table and the trace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timing {
    /// Host wall time around the op, synchronized before and after.
    Wall,
    /// Wall time of the CPU emulator of the CUDA execution model: says nothing about a GPU.
    EmulatorWall,
    /// wgpu timestamp queries around each compute pass (summed per op).
    GpuTimestamps,
    /// CUDA events recorded on the stream before and after the op's launches.
    CudaEvents,
}

impl Timing {
    /// Whether the device itself measures (else the host's clock does).
    pub fn is_device(self) -> bool {
        matches!(self, Timing::GpuTimestamps | Timing::CudaEvents)
    }
    pub fn label(self) -> &'static str {
        match self {
            Timing::Wall => "wall",
            Timing::EmulatorWall => "emulator wall",
            Timing::GpuTimestamps => "gpu timestamps",
            Timing::CudaEvents => "cuda events",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct OpStat {
    pub calls: u64,
    /// Calls made while profiling was enabled (those `time`, `flops` and `bytes` cover).
    pub timed: u64,
    pub time: Duration,
    pub flops: f64,
    pub bytes: f64,
    /// Calls whose time came from the device (timestamps, events) rather than the host's wall clock.
    pub device_timed: u64,
}

#[derive(Clone, Debug, Default)]
pub struct PhaseStat {
    pub calls: u64,
    pub time: Duration,
}

/// One complete ("ph":"X") event of the trace.
struct Event {
    name: Cow<'static, str>,
    kernel: bool,
    ts: Duration,
    dur: Duration,
    tid: u64,
    flops: f64,
    bytes: f64,
    device_timed: bool,
}

/// Kernel events kept at most (≈ 80 bytes each); later ones are counted, not stored.
const MAX_TRACE_EVENTS: usize = 2_000_000;

pub struct Profiler {
    enabled: AtomicBool,
    stats: Mutex<BTreeMap<&'static str, OpStat>>,
    phases: Mutex<BTreeMap<&'static str, PhaseStat>>,
    trace: Mutex<Option<Vec<Event>>>,
    dropped: AtomicU64,
    origin: Instant,
}

impl Default for Profiler {
    fn default() -> Self {
        Profiler {
            enabled: AtomicBool::new(false),
            stats: Default::default(),
            phases: Default::default(),
            trace: Mutex::new(None),
            dropped: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }
}

thread_local! {
    static THREAD_ID: u64 = {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    };
}

/// Records a host phase's wall time when dropped (see [`Profiler::phase`]).
pub struct PhaseGuard<'a> {
    prof: &'a Profiler,
    name: &'static str,
    start: Instant,
}

impl Drop for PhaseGuard<'_> {
    fn drop(&mut self) {
        self.prof.end_phase(self.name, self.start);
    }
}

impl Profiler {
    pub fn enable(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }
    /// Keep a trace of every timed op and phase from now on (profiling must be enabled too).
    pub fn enable_trace(&self) {
        self.trace.lock().unwrap().get_or_insert_with(Vec::new);
    }
    pub fn count(&self, name: &'static str) {
        self.stats.lock().unwrap().entry(name).or_default().calls += 1;
    }

    /// One timed op: `start` is when the host issued it, `time` its duration (device-measured when
    /// `device_timed`, else synchronized wall time).
    pub fn record(&self, name: &'static str, cost: OpCost, start: Instant, time: Duration, device_timed: bool) {
        {
            let mut s = self.stats.lock().unwrap();
            let e = s.entry(name).or_default();
            e.calls += 1;
            e.timed += 1;
            e.time += time;
            e.flops += cost.flops;
            e.bytes += cost.bytes;
            e.device_timed += device_timed as u64;
        }
        let mut trace = self.trace.lock().unwrap();
        if let Some(events) = trace.as_mut() {
            if events.len() >= MAX_TRACE_EVENTS {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            events.push(Event {
                name: Cow::Borrowed(name),
                kernel: true,
                ts: start.saturating_duration_since(self.origin),
                dur: time,
                tid: THREAD_ID.with(|t| *t),
                flops: cost.flops,
                bytes: cost.bytes,
                device_timed,
            });
        }
    }

    /// Time a host phase (an epoch, an evaluation, a screening pass) until the guard drops. Costs
    /// nothing unless profiling is enabled.
    pub fn phase(&self, name: &'static str) -> PhaseGuard<'_> {
        PhaseGuard { prof: self, name, start: Instant::now() }
    }

    /// Run `f` as a host phase.
    pub fn in_phase<R>(&self, name: &'static str, f: impl FnOnce() -> R) -> R {
        let _g = self.phase(name);
        f()
    }

    fn end_phase(&self, name: &'static str, start: Instant) {
        if !self.is_enabled() {
            return;
        }
        let dur = start.elapsed();
        {
            let mut p = self.phases.lock().unwrap();
            let e = p.entry(name).or_default();
            e.calls += 1;
            e.time += dur;
        }
        if let Some(events) = self.trace.lock().unwrap().as_mut() {
            events.push(Event {
                name: Cow::Borrowed(name),
                kernel: false,
                ts: start.saturating_duration_since(self.origin),
                dur,
                tid: 0,
                flops: 0.0,
                bytes: 0.0,
                device_timed: false,
            });
        }
    }

    pub fn reset(&self) {
        self.stats.lock().unwrap().clear();
        self.phases.lock().unwrap().clear();
        if let Some(t) = self.trace.lock().unwrap().as_mut() {
            t.clear();
        }
        self.dropped.store(0, Ordering::Relaxed);
    }
    pub fn snapshot(&self) -> BTreeMap<&'static str, OpStat> {
        self.stats.lock().unwrap().clone()
    }
    pub fn phases(&self) -> BTreeMap<&'static str, PhaseStat> {
        self.phases.lock().unwrap().clone()
    }
    pub fn total_calls(&self) -> u64 {
        self.stats.lock().unwrap().values().map(|s| s.calls).sum()
    }
    /// Sum of all ops' recorded times.
    pub fn total_time(&self) -> Duration {
        self.stats.lock().unwrap().values().map(|s| s.time).sum()
    }

    /// A readable per-kernel table (time-sorted): kernel, backend, timing, calls, total and mean time,
    /// FLOPs, bytes, achieved GFLOP/s and GB/s, and with `peaks` the fraction of each peak; then the
    /// host phases.
    pub fn table(&self, backend: &str, timing: Timing, peaks: Option<&Peaks>) -> String {
        let s = self.snapshot();
        let mut rows: Vec<_> = s.iter().filter(|r| r.1.timed > 0).collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.1.time));
        let total: f64 = rows.iter().map(|r| r.1.time.as_secs_f64()).sum();
        let mut out = format!(
            "{:<29} {:<8} {:<14} {:>7} {:>10} {:>9} {:>9} {:>9} {:>8} {:>7} {:>6} {:>6} {:>5}\n",
            "kernel", "backend", "timing", "calls", "total ms", "mean µs", "GFLOP", "MB", "GFLOP/s", "GB/s", "%pkF", "%pkB", "%time"
        );
        let pct = |rate: f64, peak: Option<f64>| match peak {
            Some(p) if p > 0.0 => format!("{:.1}", 100.0 * rate / p),
            _ => "-".into(),
        };
        for (name, st) in rows {
            let secs = st.time.as_secs_f64();
            let rate = |x: f64| if secs > 0.0 { x / secs / 1e9 } else { 0.0 };
            // Ops a device could not time (a timestamp query set overflowed) fall back to wall time.
            let how = match (timing.is_device(), st.device_timed) {
                (false, _) => timing.label(),
                (true, d) if d == st.timed => timing.label(),
                (true, 0) => "wall",
                _ => "mixed",
            };
            out += &format!(
                "{:<29} {:<8} {:<14} {:>7} {:>10.2} {:>9.1} {:>9.3} {:>9.2} {:>8.1} {:>7.2} {:>6} {:>6} {:>5.1}\n",
                name,
                backend,
                how,
                st.timed,
                secs * 1e3,
                secs * 1e6 / st.timed.max(1) as f64,
                st.flops / 1e9,
                st.bytes / 1e6,
                rate(st.flops),
                rate(st.bytes),
                pct(rate(st.flops), peaks.map(|p| p.gflops)),
                pct(rate(st.bytes), peaks.map(|p| p.gbs)),
                if total > 0.0 { 100.0 * secs / total } else { 0.0 }
            );
        }
        out += &format!("{:<29} {:<8} {:<14} {:>7} {:>10.2}\n", "(all kernels)", backend, "", "", total * 1e3);
        match peaks {
            Some(p) => out += &format!("peaks: {:.1} GFLOP/s, {:.1} GB/s ({})\n", p.gflops, p.gbs, p.source),
            None => out += "peaks: unknown for this backend (no fraction of peak)\n",
        }
        let phases = self.phases();
        if !phases.is_empty() {
            out += &format!("\n{:<29} {:>7} {:>10} {:>10}\n", "host phase", "calls", "total ms", "mean ms");
            let mut ph: Vec<_> = phases.iter().collect();
            ph.sort_by_key(|p| std::cmp::Reverse(p.1.time));
            for (name, p) in ph {
                let secs = p.time.as_secs_f64();
                out += &format!("{:<29} {:>7} {:>10.2} {:>10.2}\n", name, p.calls, secs * 1e3, secs * 1e3 / p.calls.max(1) as f64);
            }
        }
        out
    }

    /// The trace in Chrome's Trace Event Format (JSON object form): one complete event per timed op
    /// (thread = the host thread that issued it) and per host phase (thread 0), in microseconds.
    pub fn trace_json(&self, backend: &str, timing: Timing) -> Option<serde_json::Value> {
        use serde_json::json;
        let trace = self.trace.lock().unwrap();
        let events = trace.as_ref()?;
        let mut out = Vec::with_capacity(events.len() + 8);
        out.push(json!({"name": "process_name", "ph": "M", "pid": 1, "tid": 0, "args": {"name": format!("memsieve ({backend})")}}));
        out.push(json!({"name": "thread_name", "ph": "M", "pid": 1, "tid": 0, "args": {"name": "host phases"}}));
        let mut tids: Vec<u64> = events.iter().filter(|e| e.kernel).map(|e| e.tid).collect();
        tids.sort_unstable();
        tids.dedup();
        for t in tids {
            out.push(json!({"name": "thread_name", "ph": "M", "pid": 1, "tid": t, "args": {"name": format!("kernels (host thread {t})")}}));
        }
        for e in events {
            let us = |d: Duration| (d.as_nanos() as f64 / 1e3 * 1e3).round() / 1e3;
            let args = if e.kernel {
                json!({
                    "backend": backend,
                    "timing": if e.device_timed || !timing.is_device() { timing.label() } else { "wall" },
                    "flops": e.flops,
                    "bytes": e.bytes,
                })
            } else {
                json!({})
            };
            out.push(json!({
                "name": e.name,
                "cat": if e.kernel { "kernel" } else { "phase" },
                "ph": "X",
                "ts": us(e.ts),
                "dur": us(e.dur),
                "pid": 1,
                "tid": e.tid,
                "args": args,
            }));
        }
        Some(json!({
            "traceEvents": out,
            "displayTimeUnit": "ms",
            "otherData": {"backend": backend, "timing": timing.label(), "dropped_kernel_events": self.dropped.load(Ordering::Relaxed)},
        }))
    }

    /// Write the trace atomically (nothing to write unless `enable_trace` was called).
    pub fn write_trace(&self, path: &std::path::Path, backend: &str, timing: Timing) -> crate::Result<()> {
        let Some(v) = self.trace_json(backend, timing) else {
            return Err(crate::Error::Input("no trace was recorded (enable_trace was not called)".into()));
        };
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            eprintln!("trace: kept the first {MAX_TRACE_EVENTS} kernel events, dropped {dropped}");
        }
        crate::error::write_atomic(path, serde_json::to_string(&v).expect("serializable").as_bytes())
    }
}

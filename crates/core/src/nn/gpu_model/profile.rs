//! Opt-in timing of GPU models (`CORTEX_GPU_PROFILE=1`): after every stage the host waits for
//! the device, so each stage's wall time is its device time plus its host overhead. Every 10
//! training steps (or predictions) one JSON line of milliseconds per step goes to stderr.
//! Waiting serialises host and device, so profiled runs are slower than normal ones.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use cortex_wgpu::Gpu;

/// Steps per report.
const REPORT_EVERY: u64 = 10;

pub(super) struct Profiler {
    state: Mutex<State>,
}

struct State {
    last: Instant,
    /// Stage label -> total seconds since the last report.
    totals: BTreeMap<String, f64>,
    steps: u64,
}

impl Profiler {
    /// A profiler when `CORTEX_GPU_PROFILE=1`, else `None`.
    pub(super) fn from_env() -> Option<Profiler> {
        (std::env::var("CORTEX_GPU_PROFILE").as_deref() == Ok("1")).then(|| Profiler {
            state: Mutex::new(State {
                last: Instant::now(),
                totals: BTreeMap::new(),
                steps: 0,
            }),
        })
    }

    /// Starts timing a step (after waiting for earlier device work).
    pub(super) fn start(&self, gpu: &Gpu) {
        let _ = gpu.wait();
        if let Ok(mut s) = self.state.lock() {
            s.last = Instant::now();
        }
    }

    /// Charges the time since the previous mark (device work included) to `label`.
    pub(super) fn mark(&self, gpu: &Gpu, label: impl FnOnce() -> String) {
        let _ = gpu.wait();
        if let Ok(mut s) = self.state.lock() {
            let now = Instant::now();
            let secs = now.duration_since(s.last).as_secs_f64();
            s.last = now;
            *s.totals.entry(label()).or_default() += secs;
        }
    }

    /// Ends a step of `kind`; every [`REPORT_EVERY`] steps prints the per-step averages.
    pub(super) fn finish(&self, kind: &str) {
        let Ok(mut s) = self.state.lock() else { return };
        s.steps += 1;
        if s.steps < REPORT_EVERY {
            return;
        }
        let per_step: Vec<String> = s
            .totals
            .iter()
            .map(|(k, v)| format!("\"{k}\":{:.3}", v * 1e3 / s.steps as f64))
            .collect();
        let total: f64 = s.totals.values().sum::<f64>() * 1e3 / s.steps as f64;
        eprintln!(
            "{{\"cortex_gpu_profile\":\"{kind}\",\"steps\":{},\"total_ms\":{total:.3},\"ms_per_step\":{{{}}}}}",
            s.steps,
            per_step.join(",")
        );
        s.totals.clear();
        s.steps = 0;
    }
}

//! Memory limits and fallible allocation.
//!
//! Rust aborts the whole process when an allocation fails, and a model file or a request comes
//! from outside: a config declaring `units: 4e12` must become an Error, not a SIGABRT that takes
//! the Node service down. So sizes are multiplied with checked arithmetic, weights are charged
//! against a budget before they are allocated, and large buffers are reserved with
//! `try_reserve_exact`, whose failure is an [`Error::Memory`] naming the buffer and the bytes.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// The largest size of one dimension: every size option, and every layer input and output
/// axis, is below 2^31 (the kernels index with it and JavaScript gets it back as a u32).
pub const MAX_DIM: usize = (1 << 31) - 1;

/// Default cap on the weights of one model: 16 GiB (4 Gi f32 values).
pub const DEFAULT_MAX_BYTES: u64 = 16 << 30;

static MAX_MODEL_BYTES: AtomicU64 = AtomicU64::new(0);

/// The cap on the weights of one model built or loaded in this process: set with
/// [`set_max_model_bytes`], else `CORTEX_MAX_MODEL_BYTES`, else [`DEFAULT_MAX_BYTES`].
pub fn max_model_bytes() -> u64 {
    match MAX_MODEL_BYTES.load(Ordering::Relaxed) {
        0 => {
            let from_env = std::env::var("CORTEX_MAX_MODEL_BYTES")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|&v| v > 0)
                .unwrap_or(DEFAULT_MAX_BYTES);
            MAX_MODEL_BYTES.store(from_env, Ordering::Relaxed);
            from_env
        }
        v => v,
    }
}

/// Changes [`max_model_bytes`]: a service that builds models from outside configs caps them.
pub fn set_max_model_bytes(bytes: u64) -> Result<()> {
    if bytes == 0 {
        return Err(Error::Invalid(
            "setMaxModelBytes: expected a positive number of bytes, got 0".into(),
        ));
    }
    MAX_MODEL_BYTES.store(bytes, Ordering::Relaxed);
    Ok(())
}

/// Number of elements of `shape`, or an error when the product overflows.
pub fn checked_numel(what: &str, shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(|| {
        Error::Memory(format!(
            "{what}: shape {shape:?} has more elements than memory can address"
        ))
    })
}

/// Bytes of `n` f32 values, overflow-checked.
pub fn f32_bytes(what: &str, n: usize) -> Result<u64> {
    (n as u64)
        .checked_mul(4)
        .ok_or_else(|| Error::Memory(format!("{what}: {n} values overflow a byte count")))
}

/// Human-readable byte count (`1.5 GiB`).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A vector of `n` copies of `value`, or [`Error::Memory`] instead of an abort.
pub fn try_filled(what: &str, n: usize, value: f32) -> Result<Vec<f32>> {
    let mut v = try_with_capacity(what, n)?;
    v.resize(n, value);
    Ok(v)
}

/// Buffers at least this large are checked against half the [`available_memory`] before they are
/// reserved: with Linux overcommit (and mimalloc's lazy commit) the reservation itself succeeds,
/// and the process is OOM-killed when the buffer is written. The fuzzer found one: a
/// `[4, 0] x [0, 2^32 - 1]` matMul whose 68 GB of zeros were "allocated". Smaller buffers skip
/// the check: reading /proc/meminfo costs microseconds, and they cannot exhaust a machine alone.
const CHECK_AVAILABLE_FROM_BYTES: u64 = 256 << 20;

/// An empty vector with room for `n` values, or [`Error::Memory`] instead of an abort (or an
/// OOM kill: large buffers must fit in the memory available now).
pub fn try_with_capacity<T>(what: &str, n: usize) -> Result<Vec<T>> {
    let bytes = (n as u64).saturating_mul(std::mem::size_of::<T>() as u64);
    let refuse = || {
        Error::Memory(format!(
            "cannot allocate {what}: {} ({bytes} bytes) are not available",
            human(bytes)
        ))
    };
    // Half of what is available: an op's output never comes alone (its inputs, the next op's
    // output, a gradient of the same size), so a buffer that takes it all kills the process one
    // allocation later (the fuzzer's [1.7e9, 2] relu after a matMul of the same size).
    if bytes >= CHECK_AVAILABLE_FROM_BYTES && available_memory().is_some_and(|room| bytes > room / 2) {
        return Err(refuse());
    }
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| refuse())?;
    Ok(v)
}

/// Panic payload of a kernel whose output buffer cannot be allocated. Kernels return plain
/// vectors, so they unwind with this instead of aborting; the Node binding's panic guard turns
/// it into an ordinary `Error` with the message (and no "please report" text).
#[derive(Debug, Clone)]
pub struct OutOfMemory(pub String);

/// A vector with room for `n` values, or an unwind carrying [`OutOfMemory`] (never an abort).
pub fn reserve_or_unwind<T>(what: &str, n: usize) -> Vec<T> {
    match try_with_capacity(what, n) {
        Ok(v) => v,
        Err(e) => std::panic::panic_any(OutOfMemory(e.to_string())),
    }
}

/// `n` zeros, or an unwind carrying [`OutOfMemory`].
pub fn zeros_or_unwind(what: &str, n: usize) -> Vec<f32> {
    let mut v = reserve_or_unwind(what, n);
    v.resize(n, 0.0);
    v
}

/// How weights are filled while a [`WeightBudget`] is active.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFill {
    /// Sample the layer's initializer (a new model).
    Initialize,
    /// Zeros: the weights are about to be overwritten from a file, so sampling would be wasted.
    Overwrite,
}

struct Budget {
    limit: u64,
    used: u64,
    fill: WeightFill,
    source: String,
}

thread_local! {
    static BUDGET: RefCell<Option<Budget>> = const { RefCell::new(None) };
}

/// Scope of a weight budget: every weight created on this thread inside [`WeightBudget::run`] is
/// charged against `limit` bytes before it is allocated.
pub struct WeightBudget {
    limit: u64,
    fill: WeightFill,
    source: String,
}

impl WeightBudget {
    /// A budget of `limit` bytes; `source` says where the limit comes from in error messages.
    pub fn new(limit: u64, fill: WeightFill, source: impl Into<String>) -> Self {
        WeightBudget {
            limit,
            fill,
            source: source.into(),
        }
    }

    /// Runs `f` under this budget. A budget already active on this thread stays in force (a
    /// nested model is charged against its outer model's budget).
    pub fn run<R>(self, f: impl FnOnce() -> R) -> R {
        if BUDGET.with(|b| b.borrow().is_some()) {
            return f();
        }
        BUDGET.with(|b| {
            *b.borrow_mut() = Some(Budget {
                limit: self.limit,
                used: 0,
                fill: self.fill,
                source: self.source,
            })
        });
        // Cleared by a guard so a panic inside `f` cannot leave a stale budget on the thread.
        struct Clear;
        impl Drop for Clear {
            fn drop(&mut self) {
                BUDGET.with(|b| *b.borrow_mut() = None);
            }
        }
        let _clear = Clear;
        f()
    }
}

/// Charges a weight of `shape` against the active budget (or, outside any, against
/// [`max_model_bytes`] alone) and says how to fill it.
pub fn charge_weight(shape: &[usize]) -> Result<(usize, WeightFill)> {
    let n = checked_numel("weight", shape)?;
    let bytes = f32_bytes("weight", n)?;
    BUDGET.with(|b| match b.borrow_mut().as_mut() {
        Some(budget) => {
            let total = budget.used.saturating_add(bytes);
            if total > budget.limit {
                return Err(Error::Memory(format!(
                    "a weight of shape {shape:?} ({}) brings the model's weights to {}, over the {} limit ({})",
                    human(bytes),
                    human(total),
                    human(budget.limit),
                    budget.source
                )));
            }
            budget.used = total;
            Ok((n, budget.fill))
        }
        None if bytes > max_model_bytes() => Err(Error::Memory(format!(
            "a weight of shape {shape:?} needs {}, over the {} limit on a model's weights \
             (setMaxModelBytes)",
            human(bytes),
            human(max_model_bytes())
        ))),
        None => Ok((n, WeightFill::Initialize)),
    })
}

/// Refuses a batch of `batch` samples of `per_sample` activation bytes when it needs more memory
/// than the system has available, before any kernel allocates it. Small batches (under 256 MiB)
/// are let through without reading `/proc/meminfo`.
pub fn check_activations(what: &str, batch: usize, per_sample: u64) -> Result<()> {
    const CHECK_ABOVE: u64 = 256 << 20;
    let need = per_sample.saturating_mul(batch as u64);
    if need <= CHECK_ABOVE {
        return Ok(());
    }
    match available_memory() {
        Some(available) if need > available => Err(Error::Memory(format!(
            "{what}: a batch of {batch} samples needs about {} of activations ({} per sample), more than \
             the {} of memory available; use a smaller batchSize",
            human(need),
            human(per_sample),
            human(available)
        ))),
        _ => Ok(()),
    }
}

/// Bytes of f32 activations of the given sample shapes (saturating: a shape too large to
/// address counts as "more than any memory").
pub fn activation_bytes<'a>(shapes: impl IntoIterator<Item = &'a Vec<usize>>) -> u64 {
    shapes
        .into_iter()
        .map(|s| crate::tensor::numel(s) as u64)
        .fold(0u64, u64::saturating_add)
        .saturating_mul(4)
}

/// Memory available to new allocations: the kernel's `MemAvailable`, or less when this process
/// runs in a cgroup (a container) whose `memory.max` leaves less room than that.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    let system = kib.checked_mul(1024)?;
    Some(match cgroup_headroom() {
        Some(room) => room.min(system),
        None => system,
    })
}

/// `memory.max - memory.current` of the cgroup v2 this process is in, when it has a limit.
fn cgroup_headroom() -> Option<u64> {
    let read = |name: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{name}")).ok();
    let max: u64 = read("memory.max")?.trim().parse().ok()?; // "max" (no limit) fails to parse
    let current: u64 = read("memory.current")?.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_that_overflow_are_errors() {
        assert!(checked_numel("x", &[1 << 40, 1 << 40]).is_err());
        assert_eq!(checked_numel("x", &[3, 4]).unwrap(), 12);
        assert!(f32_bytes("x", usize::MAX).is_err());
    }

    #[test]
    fn an_impossible_allocation_is_an_error() {
        let e = try_filled("activations", usize::MAX / 8, 0.0).unwrap_err();
        assert!(e.to_string().contains("cannot allocate activations"), "{e}");
    }

    #[test]
    fn a_buffer_larger_than_available_memory_is_refused_before_it_is_reserved() {
        // Overcommit would let the reservation succeed; writing it would get the process killed.
        let Some(room) = available_memory() else { return };
        let n = (room / 8 + (1 << 28)) as usize;
        let e = try_with_capacity::<f32>("a huge output", n).unwrap_err();
        assert!(e.to_string().contains("cannot allocate a huge output"), "{e}");
        // The fuzzer's case: a matMul with k = 0 and a 2^32 - 1 wide output (68 GB of zeros).
        let a = crate::Tensor::new(Vec::new(), &[4, 0]).unwrap();
        let b = crate::Tensor::new(Vec::new(), &[0, u32::MAX as usize]).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| crate::ops::matmul(&a, &b)));
        let payload = r.expect_err("an OutOfMemory unwind");
        assert!(payload.downcast_ref::<OutOfMemory>().is_some());
    }

    #[test]
    fn a_kernel_allocation_failure_unwinds_with_a_typed_payload() {
        let r = std::panic::catch_unwind(|| zeros_or_unwind("a conv output", usize::MAX / 8));
        let payload = r.unwrap_err();
        let oom = payload.downcast_ref::<OutOfMemory>().expect("typed payload");
        assert!(oom.0.contains("cannot allocate a conv output"), "{}", oom.0);
    }

    #[test]
    fn the_budget_counts_every_weight_and_ends_with_its_scope() {
        let r = WeightBudget::new(99, WeightFill::Overwrite, "test").run(|| {
            assert_eq!(charge_weight(&[5, 4]).unwrap(), (20, WeightFill::Overwrite));
            charge_weight(&[2, 2]).unwrap();
            charge_weight(&[1, 1])
        });
        let e = r.unwrap_err().to_string();
        assert!(e.contains("over the 99 B limit (test)"), "{e}");
        assert_eq!(charge_weight(&[4]).unwrap().1, WeightFill::Initialize);
        assert!(charge_weight(&[4_000_000_000_000, 4]).is_err());
    }
}

//! A trainable weight: a named, swappable tensor.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use crate::{Error, Result, Tensor};

thread_local! {
    static FROZEN: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every parameter read on this thread as a constant: ops are still recorded
/// for the inputs, but no gradient is computed for the weights (input gradients for
/// explanations and attacks need none, and weight gradients are most of a backward pass).
pub fn with_frozen_params<R>(f: impl FnOnce() -> R) -> R {
    /// Restores the flag even when `f` unwinds (an out-of-memory panic becomes an Error).
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            FROZEN.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(FROZEN.with(|c| c.replace(true)));
    f()
}

/// A layer weight. Forward passes read a snapshot (`get`); optimizers install new values (`set`).
pub struct Param {
    /// Full name, `layer/weight`.
    pub name: String,
    value: RwLock<Tensor>,
    /// Whether optimizers update it (Keras `trainable`).
    pub trainable: bool,
    /// Bumped by every change, so a device copy can tell it is stale.
    version: AtomicU64,
}

impl Param {
    /// A parameter holding `data` with `shape`.
    pub fn new(name: String, data: Vec<f32>, shape: &[usize], trainable: bool) -> Result<Param> {
        Ok(Param {
            name,
            value: RwLock::new(Tensor::variable(data, shape)?),
            trainable,
            version: AtomicU64::new(0),
        })
    }

    /// The current value, a gradient leaf (a constant inside [`with_frozen_params`]).
    pub fn get(&self) -> Tensor {
        let t = self.value.read().unwrap_or_else(|e| e.into_inner()).clone();
        if FROZEN.with(Cell::get) {
            t.with_requires_grad(false)
        } else {
            t
        }
    }

    /// The shape.
    pub fn shape(&self) -> Vec<usize> {
        self.get().shape().to_vec()
    }

    /// How many times the value has changed.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Changes the value in place (copying first only if a forward pass still holds it).
    pub fn update<R>(&self, f: impl FnOnce(&mut [f32]) -> R) -> R {
        self.version.fetch_add(1, Ordering::AcqRel);
        let mut guard = self.value.write().unwrap_or_else(|e| e.into_inner());
        if guard.data_mut().is_none() {
            let copy = Tensor::variable(guard.to_vec(), guard.shape()).expect("same shape");
            *guard = copy;
        }
        f(guard.data_mut().expect("sole owner after the copy"))
    }

    /// Replaces the value; the length must match.
    pub fn set(&self, data: Vec<f32>) -> Result<()> {
        let shape = self.shape();
        if data.len() != crate::tensor::numel(&shape) {
            return Err(Error::shape(
                &format!("setWeights for '{}'", self.name),
                &shape,
                data.len(),
            ));
        }
        *self.value.write().unwrap_or_else(|e| e.into_inner()) = Tensor::variable(data, &shape)?;
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

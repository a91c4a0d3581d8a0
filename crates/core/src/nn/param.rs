//! A trainable weight: a named, swappable tensor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use crate::{Error, Result, Tensor};

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

    /// The current value, a gradient leaf.
    pub fn get(&self) -> Tensor {
        self.value.read().unwrap_or_else(|e| e.into_inner()).clone()
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

//! A trainable weight: a named, swappable tensor.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use crate::{Device, Error, Result, Tensor};

thread_local! {
    static FROZEN: Cell<bool> = const { Cell::new(false) };
    /// Inside [`with_only_trainable`] (innermost last): the addresses of the parameters that train.
    static TRAINING: RefCell<Vec<HashSet<usize>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with the parameters outside `trainable` (addresses of [`Param`]s, as a compiled
/// model keeps them) read on this thread as constants, so a training step computes no gradient
/// for frozen layers (a frozen backbone, the discriminator inside a GAN's combined model):
/// their weight gradients would be most of the backward pass, then thrown away.
pub fn with_only_trainable<R>(trainable: &HashSet<usize>, f: impl FnOnce() -> R) -> R {
    /// Leaves the scope even when `f` unwinds.
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            leave_trainable_scope();
        }
    }
    enter_trainable_scope(trainable.clone());
    let _leave = Leave;
    f()
}

/// Opens a [`with_only_trainable`] scope on this thread until the matching
/// [`leave_trainable_scope`]: for callers that cannot wrap the work in a closure (a JS
/// `valueAndGrads` runs the user's function between two binding calls).
pub fn enter_trainable_scope(trainable: HashSet<usize>) {
    TRAINING.with(|t| t.borrow_mut().push(trainable));
}

/// Closes the innermost scope opened by [`enter_trainable_scope`] (nothing when none is open).
pub fn leave_trainable_scope() {
    TRAINING.with(|t| t.borrow_mut().pop());
}

/// The innermost scope open on this thread, to carry into work run on another thread (a
/// model call runs on the thread pool) with [`within_scope`].
pub fn current_trainable_scope() -> Option<HashSet<usize>> {
    TRAINING.with(|t| t.borrow().last().cloned())
}

/// Runs `f` inside `scope` (from [`current_trainable_scope`]), or as is for `None`.
pub fn within_scope<R>(scope: Option<&HashSet<usize>>, f: impl FnOnce() -> R) -> R {
    match scope {
        Some(set) => with_only_trainable(set, f),
        None => f(),
    }
}

/// The address under which scopes and compiled models know `p`.
pub fn param_address(p: &Param) -> usize {
    p as *const Param as usize
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
    /// A sign per row of the first axis (+1 or -1), kept by every [`Param::update`]: Dale's
    /// law, each presynaptic unit's outgoing weights are all excitatory or all inhibitory.
    row_signs: Option<Vec<f32>>,
}

impl Param {
    /// A parameter holding `data` with `shape`.
    pub fn new(name: String, data: Vec<f32>, shape: &[usize], trainable: bool) -> Result<Param> {
        Ok(Param {
            name,
            value: RwLock::new(Tensor::variable(data, shape)?),
            trainable,
            version: AtomicU64::new(0),
            row_signs: None,
        })
    }

    /// Constrains row `i` of the first axis to the sign `signs[i]` (> 0: weights >= 0, else
    /// <= 0); the current value is projected onto the constraint.
    pub fn with_row_signs(mut self, signs: Vec<f32>) -> Result<Param> {
        let shape = self.shape();
        if shape.first() != Some(&signs.len()) {
            return Err(Error::shape(
                &format!("row signs of '{}'", self.name),
                [signs.len()],
                &shape,
            ));
        }
        self.row_signs = Some(signs);
        self.update(|_| ())?;
        Ok(self)
    }

    /// The per-row sign constraint, if any.
    pub fn row_signs(&self) -> Option<&[f32]> {
        self.row_signs.as_deref()
    }

    /// The current value, a gradient leaf (a constant inside [`with_frozen_params`], and inside
    /// [`with_only_trainable`] when it is not in the set).
    pub fn get(&self) -> Tensor {
        let t = self.value.read().unwrap_or_else(|e| e.into_inner()).clone();
        let address = param_address(self);
        let frozen_here = TRAINING.with(|t| t.borrow().last().is_some_and(|set| !set.contains(&address)));
        if frozen_here || FROZEN.with(Cell::get) {
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

    /// Changes the value in place (copying first only if a forward pass still holds it), then
    /// projects it onto the sign constraint, if any (`w = s * max(s * w, 0)` per row): the
    /// optimizer steps of `fit` and of `applyGradients` both come through here.
    ///
    /// A GPU value is updated on the host and uploaded again (for updates with no device
    /// kernel); a failed read-back or upload is an Error, and the value is left as it was.
    pub fn update<R>(&self, f: impl FnOnce(&mut [f32]) -> R) -> Result<R> {
        self.version.fetch_add(1, Ordering::AcqRel);
        let mut guard = self.value.write().unwrap_or_else(|e| e.into_inner());
        if guard.device() != Device::Cpu {
            let device = guard.device();
            let mut host = guard.host_values()?.to_vec();
            let result = f(&mut host);
            if let Some(signs) = &self.row_signs {
                project_rows(&mut host, signs);
            }
            *guard = Tensor::new(host, guard.shape())?.to(device)?.with_requires_grad(true);
            return Ok(result);
        }
        if guard.data_mut().is_none() {
            let copy = Tensor::variable(guard.to_vec(), guard.shape()).expect("same shape");
            *guard = copy;
        }
        let data = guard.data_mut().expect("sole owner after the copy");
        let result = f(data);
        if let Some(signs) = &self.row_signs {
            project_rows(data, signs);
        }
        Ok(result)
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
        let device = self.device();
        *self.value.write().unwrap_or_else(|e| e.into_inner()) =
            Tensor::new(data, &shape)?.to(device)?.with_requires_grad(true);
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Updates a GPU value in place with `f` on its device buffer (after copying it when a
    /// graph or a caller still holds the current value). Values with a sign constraint go
    /// through [`Param::update`], which projects on the host.
    pub fn update_on_device(&self, f: impl FnOnce(&mut cortex_wgpu::GpuTensor) -> Result<()>) -> Result<()> {
        if self.row_signs.is_some() {
            return Err(Error::Invalid(format!(
                "'{}' has a sign constraint, projected on the host",
                self.name
            )));
        }
        let mut guard = self.value.write().unwrap_or_else(|e| e.into_inner());
        let mut buffer = guard.take_gpu_buffer()?;
        self.version.fetch_add(1, Ordering::AcqRel);
        f(&mut buffer)?;
        *guard = Tensor::from_gpu(buffer).with_requires_grad(true);
        Ok(())
    }

    /// Where the value lives.
    pub fn device(&self) -> Device {
        self.value.read().unwrap_or_else(|e| e.into_inner()).device()
    }

    /// Moves the value to `device` (a no-op when it is there): forward passes then run the
    /// layer's ops there, and gradients for it are computed there.
    pub fn to_device(&self, device: Device) -> Result<()> {
        let mut guard = self.value.write().unwrap_or_else(|e| e.into_inner());
        if guard.device() != device {
            *guard = guard.detach().to(device)?.with_requires_grad(true);
            self.version.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }
}

/// Sets each weight of row `i` whose sign differs from `signs[i]` to zero.
fn project_rows(data: &mut [f32], signs: &[f32]) {
    let cols = data.len() / signs.len().max(1);
    for (row, &s) in data.chunks_exact_mut(cols.max(1)).zip(signs) {
        for w in row {
            if s * *w < 0.0 {
                *w = 0.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_keep_row_signs() {
        let p = Param::new("w".into(), vec![1.0, -2.0, 3.0, -4.0], &[2, 2], true)
            .unwrap()
            .with_row_signs(vec![1.0, -1.0])
            .unwrap();
        assert_eq!(p.get().to_vec(), [1.0, 0.0, 0.0, -4.0]);
        p.update(|d| d.iter_mut().for_each(|w| *w -= 2.0)).unwrap();
        assert_eq!(p.get().to_vec(), [0.0, 0.0, -2.0, -6.0]);
        assert!(Param::new("w".into(), vec![0.0; 4], &[2, 2], true)
            .unwrap()
            .with_row_signs(vec![1.0])
            .is_err());
    }

    #[test]
    fn only_the_trainable_set_tracks_inside_with_only_trainable() {
        let a = Param::new("a".into(), vec![1.0], &[1], true).unwrap();
        let b = Param::new("b".into(), vec![2.0], &[1], true).unwrap();
        let set: HashSet<usize> = [&a as *const Param as usize].into();
        with_only_trainable(&set, || {
            assert!(a.get().tracks());
            assert!(!b.get().tracks());
            assert_eq!(b.get().to_vec(), [2.0]);
        });
        assert!(a.get().tracks() && b.get().tracks());
        // Restored when the closure unwinds, too.
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            with_only_trainable(&set, || panic!("inside"));
        }));
        assert!(unwound.is_err() && b.get().tracks());
    }
}

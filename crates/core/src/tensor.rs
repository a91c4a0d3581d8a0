//! [`Tensor`]: shared, immutable f32 storage plus a shape and the op that produced it.
//!
//! Cloning a tensor is cheap (an `Arc`); reshaping shares storage. A tensor records its op only
//! while gradients are enabled and one of its inputs needs a gradient, so inference builds no
//! graph at all.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::backprop::Op;
use crate::device::{Device, Storage};
use crate::{Error, Result};

/// Unique identity of a tensor, used as the key of gradient maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(usize);

impl TensorId {
    fn fresh() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// How a tensor came to be, as far as backward is concerned.
pub(crate) enum Graph {
    /// A constant or a gradient leaf.
    Leaf,
    /// The recorded op; it holds the inputs (and whatever its backward saved).
    Recorded(Op),
    /// A backward pass consumed the op: the saved tensors are freed, as in PyTorch.
    Released,
}

struct Inner {
    id: TensorId,
    shape: Vec<usize>,
    storage: Arc<Storage>,
    // A mutex, not a plain field, so backward can free the graph as it walks it: the memory of a
    // training step is returned the moment its gradients exist, not when JS collects the handle.
    graph: Mutex<Graph>,
    requires_grad: bool,
}

/// An n-dimensional f32 array (row-major), immutable once made.
#[derive(Clone)]
pub struct Tensor(Arc<Inner>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor{:?}", self.shape())
    }
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Runs `f` without recording ops (inference, optimizer updates).
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let before = GRAD_ENABLED.with(|g| g.replace(false));
    let out = f();
    GRAD_ENABLED.with(|g| g.set(before));
    out
}

/// Whether ops are being recorded on this thread.
pub fn grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Number of elements of a shape. Saturates instead of wrapping: a shape whose product overflows
/// (from a hostile request) can then never match the length of real data.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().fold(1usize, |n, &d| n.saturating_mul(d))
}

impl Tensor {
    /// A constant tensor from values and a shape; errors when the lengths disagree.
    pub fn new(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        if data.len() != numel(shape) {
            return Err(Error::Invalid(format!(
                "tensor data has {} values but shape {:?} needs {}",
                data.len(),
                shape,
                numel(shape)
            )));
        }
        Ok(Tensor::from_parts(
            Arc::new(Storage::Cpu(data)),
            shape.to_vec(),
            None,
            false,
        ))
    }

    /// A leaf that gradients flow to (a model weight or a user variable).
    pub fn variable(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        let t = Tensor::new(data, shape)?;
        Ok(Tensor::from_parts(t.0.storage.clone(), shape.to_vec(), None, true))
    }

    /// Same values, now tracked (or not) as a gradient leaf.
    pub fn with_requires_grad(&self, requires_grad: bool) -> Tensor {
        Tensor::from_parts(self.0.storage.clone(), self.0.shape.clone(), None, requires_grad)
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Tensor {
        let data = crate::alloc::zeros_or_unwind("a tensor of zeros", numel(shape));
        Tensor::new(data, shape).expect("length matches by construction")
    }

    /// A scalar (shape `[]`).
    pub fn scalar(v: f32) -> Tensor {
        Tensor::new(vec![v], &[]).expect("length matches by construction")
    }

    pub(crate) fn from_parts(storage: Arc<Storage>, shape: Vec<usize>, op: Option<Op>, requires_grad: bool) -> Tensor {
        Tensor(Arc::new(Inner {
            id: TensorId::fresh(),
            shape,
            storage,
            graph: Mutex::new(op.map_or(Graph::Leaf, Graph::Recorded)),
            requires_grad,
        }))
    }

    /// The result of an op: records `op` when gradients are enabled and an input needs one.
    /// `op` receives the output's storage, for ops whose backward needs their own output.
    pub(crate) fn from_op(
        data: Vec<f32>,
        shape: Vec<usize>,
        op: impl FnOnce(&Arc<Storage>) -> Op,
        inputs: &[&Tensor],
    ) -> Tensor {
        debug_assert_eq!(data.len(), numel(&shape));
        // A host result of GPU inputs would be a silent CPU fallback: ops dispatch first.
        debug_assert!(
            inputs.iter().all(|t| t.device() == Device::Cpu),
            "a CPU kernel ran on GPU inputs"
        );
        let storage = Arc::new(Storage::Cpu(data));
        let track = Tensor::records(inputs);
        let op = if track { Some(op(&storage)) } else { None };
        Tensor::from_parts(storage, shape, op, track)
    }

    /// Whether an op on `inputs` would be recorded: gradients are enabled on this thread and
    /// some input needs one. Kernels with a cheaper inference-only form check this first.
    pub(crate) fn records(inputs: &[&Tensor]) -> bool {
        grad_enabled() && inputs.iter().any(|t| t.tracks())
    }

    /// Unique id.
    pub fn id(&self) -> TensorId {
        self.0.id
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.shape.len()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        numel(&self.0.shape)
    }

    /// True for a tensor with no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The device holding the data.
    pub fn device(&self) -> Device {
        self.0.storage.device()
    }

    /// The values in host memory. A GPU tensor is read back on the first call (blocking) and
    /// unwinds if that fails; [`Tensor::host_values`] returns the failure as an Error.
    pub fn data(&self) -> &[f32] {
        self.0.storage.as_slice()
    }

    /// [`Tensor::data`], with a failed GPU read-back as an Error.
    pub fn host_values(&self) -> Result<&[f32]> {
        self.0.storage.host_values()
    }

    /// The values on `device`: the same tensor when it is there already, else a copy. The copy
    /// is differentiable: gradients flow back to this tensor's device.
    pub fn to(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        let storage = match device {
            Device::Gpu => {
                let gpu = crate::device::shared_gpu()?;
                Storage::gpu(
                    gpu.upload(self.host_values()?, self.shape())
                        .map_err(crate::device::gpu_err)?,
                )
            }
            Device::Cpu => Storage::Cpu(self.host_values()?.to_vec()),
        };
        let track = grad_enabled() && self.tracks();
        let op = track.then(|| Op::ToDevice(self.clone()));
        Ok(Tensor::from_parts(Arc::new(storage), self.shape().to_vec(), op, track))
    }

    /// The device buffer of a GPU tensor, under this tensor's shape (a reshape shares storage
    /// whose buffer keeps the shape it was made with).
    pub(crate) fn gpu_tensor(&self) -> Option<cortex_wgpu::GpuTensor> {
        let t = self.0.storage.gpu_tensor()?.clone();
        t.reshape(self.shape()).ok()
    }

    /// The device buffer of a GPU tensor (`None` on the CPU), for kernels outside the engine.
    pub fn gpu_buffer(&self) -> Option<cortex_wgpu::GpuTensor> {
        self.gpu_tensor()
    }

    /// A GPU op's result: records `op` when gradients are enabled and an input needs one.
    pub(crate) fn from_gpu_op(
        t: cortex_wgpu::GpuTensor,
        shape: Vec<usize>,
        op: impl FnOnce(&Arc<Storage>) -> Op,
        inputs: &[&Tensor],
    ) -> Tensor {
        debug_assert_eq!(t.len(), numel(&shape));
        let storage = Arc::new(Storage::gpu(t));
        let track = Tensor::records(inputs);
        let op = if track { Some(op(&storage)) } else { None };
        Tensor::from_parts(storage, shape, op, track)
    }

    /// The device buffer of a GPU tensor for an in-place update: its own when nothing else
    /// holds this tensor or its storage, else a fresh copy. Errors for a CPU tensor.
    pub(crate) fn take_gpu_buffer(&mut self) -> Result<cortex_wgpu::GpuTensor> {
        let shape = self.shape().to_vec();
        let unique = Arc::get_mut(&mut self.0).and_then(|inner| Arc::get_mut(&mut inner.storage));
        if let Some(Storage::Gpu(s)) = unique {
            return s.take_tensor().reshape(&shape).map_err(crate::device::gpu_err);
        }
        let shared = self
            .gpu_tensor()
            .ok_or_else(|| Error::Invalid("an in-place device update of a CPU tensor".into()))?;
        let gpu = crate::device::shared_gpu()?;
        gpu.scale(&shared, 1.0, 0.0).map_err(crate::device::gpu_err)
    }

    /// A constant wrapping a device buffer.
    pub fn from_gpu(t: cortex_wgpu::GpuTensor) -> Tensor {
        let shape = t.shape().to_vec();
        Tensor::from_parts(Arc::new(Storage::gpu(t)), shape, None, false)
    }

    /// A copy of the values.
    pub fn to_vec(&self) -> Vec<f32> {
        self.data().to_vec()
    }

    /// The values as an owned `Vec`, moved out without a copy when nothing else holds this
    /// tensor or its buffer (a fresh `predict` output), else copied as [`Tensor::to_vec`].
    pub fn into_vec(self) -> Vec<f32> {
        match Arc::try_unwrap(self.0) {
            Ok(inner) => match Arc::try_unwrap(inner.storage) {
                Ok(Storage::Cpu(values)) => values,
                Ok(storage) => storage.as_slice().to_vec(),
                Err(shared) => shared.as_slice().to_vec(),
            },
            Err(shared) => shared.storage.as_slice().to_vec(),
        }
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        match self.data() {
            [v] => Ok(*v),
            d => Err(Error::Invalid(format!(
                "item() needs a one-element tensor, got {} elements",
                d.len()
            ))),
        }
    }

    /// Whether gradients flow through this tensor.
    pub fn tracks(&self) -> bool {
        self.0.requires_grad
    }

    /// How this tensor was produced (locked: hold the guard briefly).
    pub(crate) fn graph(&self) -> MutexGuard<'_, Graph> {
        // A panic inside a vjp poisons nothing we rely on: the graph state is still coherent.
        self.0.graph.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the recorded op out, freeing what it saved; later backward passes through this
    /// tensor report that its graph is gone.
    pub(crate) fn release_graph(&self) -> Option<Op> {
        let mut graph = self.graph();
        match std::mem::replace(&mut *graph, Graph::Released) {
            Graph::Recorded(op) => Some(op),
            Graph::Leaf => {
                *graph = Graph::Leaf;
                None
            }
            Graph::Released => None,
        }
    }

    /// Mutable access to the values when nothing else shares this tensor or its storage
    /// (optimizers update weights in place this way once the graph is gone).
    pub(crate) fn data_mut(&mut self) -> Option<&mut [f32]> {
        let inner = Arc::get_mut(&mut self.0)?;
        match Arc::get_mut(&mut inner.storage)? {
            Storage::Cpu(v) => Some(v.as_mut_slice()),
            Storage::Gpu(_) => None,
        }
    }

    /// Same storage under another shape of equal size.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.len() {
            return Err(Error::shape(
                "reshape",
                format!("a shape with {} elements", self.len()),
                shape,
            ));
        }
        let track = grad_enabled() && self.tracks();
        let op = track.then(|| Op::Reshape(self.clone()));
        Ok(Tensor::from_parts(self.0.storage.clone(), shape.to_vec(), op, track))
    }

    /// Same values, cut off from the graph.
    pub fn detach(&self) -> Tensor {
        self.with_requires_grad(false)
    }

    /// Errors if any value is NaN or infinite (`what` names the tensor in the message).
    pub fn check_finite(&self, what: &str) -> Result<()> {
        // A branch-free OR over blocks vectorises; `position` stops per element and does not
        // (it was 2% of an int8 convnet predict, on the serial part before the parallel work).
        let non_finite = |v: &f32| u32::from(v.to_bits() & 0x7f80_0000 == 0x7f80_0000);
        let clean = |block: &[f32]| block.iter().fold(0, |any, v| any | non_finite(v)) == 0;
        if self.data().chunks(1024).all(clean) {
            return Ok(());
        }
        if let Some(i) = self.data().iter().position(|v| !v.is_finite()) {
            return Err(Error::Invalid(format!(
                "{what} contains a non-finite value ({}) at flat index {i}; expected only finite numbers",
                self.data()[i]
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Tensor;

    #[test]
    fn check_finite_finds_every_non_finite_value_and_passes_extremes() {
        let n = 3000;
        let mut data: Vec<f32> = (0..n).map(|i| i as f32 - 1500.0).collect();
        data[5] = f32::MAX;
        data[6] = -f32::MAX;
        data[7] = f32::MIN_POSITIVE / 4.0; // a denormal
        Tensor::new(data.clone(), &[n]).unwrap().check_finite("x").unwrap();
        for at in [0, 1023, 1024, 2500, n - 1] {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut d = data.clone();
                d[at] = bad;
                let err = Tensor::new(d, &[n]).unwrap().check_finite("x").unwrap_err();
                assert!(err.to_string().contains(&format!("flat index {at}")), "{err}");
            }
        }
    }

    #[test]
    fn into_vec_moves_a_sole_buffer_and_copies_a_shared_one() {
        let sole = Tensor::new(vec![1.0, 2.0, 3.0], &[3]).unwrap();
        let at = sole.data().as_ptr();
        let values = sole.into_vec();
        assert_eq!(values, [1.0, 2.0, 3.0]);
        assert_eq!(values.as_ptr(), at, "a tensor nobody else holds gives up its buffer");

        let held = Tensor::new(vec![4.0, 5.0], &[2]).unwrap();
        let copy = held.clone().into_vec();
        assert_eq!(copy, [4.0, 5.0]);
        assert_ne!(copy.as_ptr(), held.data().as_ptr(), "a held tensor is copied");
        assert_eq!(held.data(), [4.0, 5.0]);

        let shared_storage = held.reshape(&[1, 2]).unwrap();
        let copy = shared_storage.into_vec();
        assert_ne!(
            copy.as_ptr(),
            held.data().as_ptr(),
            "a buffer shared by a view is copied"
        );
        assert_eq!(held.data(), [4.0, 5.0]);
    }
}

//! [`LayerCell`]: a layer shared between the models that use it (Keras weight sharing: the same
//! layer object in two models has one set of weights). Cells are registered by id so the
//! TypeScript side can refer to a layer it created when it describes a model.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use super::layers::Layer;
use crate::rng::Rng;
use crate::{Error, Result};

/// (input shapes, output shapes) of a built layer, without the batch axis.
pub type BuiltShapes = (Vec<Vec<usize>>, Vec<Vec<usize>>);

/// A layer plus what sharing needs: a lock, a trainable flag and the shapes it was built for.
pub struct LayerCell {
    id: u64,
    layer: RwLock<Box<dyn Layer>>,
    trainable: AtomicBool,
    /// (input shapes, output shapes) once built, without the batch axis.
    shapes: Mutex<Option<BuiltShapes>>,
}

/// Reference-counted handle to a [`LayerCell`].
pub type SharedLayer = Arc<LayerCell>;

fn registry() -> &'static Mutex<HashMap<u64, Weak<LayerCell>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<u64, Weak<LayerCell>>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

impl LayerCell {
    /// Wraps and registers a layer.
    pub fn new(layer: Box<dyn Layer>, trainable: bool) -> SharedLayer {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let cell = Arc::new(LayerCell {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            layer: RwLock::new(layer),
            trainable: AtomicBool::new(trainable),
            shapes: Mutex::new(None),
        });
        let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        map.insert(cell.id, Arc::downgrade(&cell));
        cell
    }

    /// The live layer registered under `id`.
    pub fn lookup(id: u64) -> Result<SharedLayer> {
        registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .and_then(Weak::upgrade)
            .ok_or_else(|| Error::Invalid(format!("no live layer with id {id}")))
    }

    /// Registry id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Shared access to the layer.
    pub fn read(&self) -> RwLockReadGuard<'_, Box<dyn Layer>> {
        self.layer.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Shared access if no one holds it exclusively right now (never waits).
    pub fn try_read(&self) -> Option<RwLockReadGuard<'_, Box<dyn Layer>>> {
        match self.layer.try_read() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Exclusive access to the layer.
    pub fn write(&self) -> RwLockWriteGuard<'_, Box<dyn Layer>> {
        self.layer.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether training updates its weights (Keras `trainable`; nested models set their layers').
    pub fn trainable(&self) -> bool {
        self.trainable.load(Ordering::Relaxed)
    }

    /// Freezes or unfreezes the layer (and, for a nested model, every layer inside it).
    pub fn set_trainable(&self, trainable: bool) {
        self.trainable.store(trainable, Ordering::Relaxed);
        if let Some(model) = self.read().as_model() {
            model.set_trainable(trainable);
        }
    }

    /// Input shapes it was built for, if built.
    pub fn built_shapes(&self) -> Option<BuiltShapes> {
        self.shapes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Builds the layer for `inputs` on first use; later uses must bring the same shapes.
    /// Returns the output shapes.
    pub fn build(&self, inputs: &[Vec<usize>], rng: &mut Rng) -> Result<Vec<Vec<usize>>> {
        let mut shapes = self.shapes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((built_in, built_out)) = shapes.as_ref() {
            if built_in.as_slice() != inputs {
                let layer = self.read();
                return Err(Error::shape(
                    &format!(
                        "layer '{}' ({}), which is already built,",
                        layer.name(),
                        layer.class_name()
                    ),
                    built_in,
                    inputs,
                ));
            }
            return Ok(built_out.clone());
        }
        check_dims(&**self.read(), "input", inputs)?;
        let outputs = self.write().build_many(inputs, rng)?;
        check_dims(&**self.read(), "output", &outputs)?;
        *shapes = Some((inputs.to_vec(), outputs.clone()));
        Ok(outputs)
    }
}

/// Every dimension a layer is built for, or builds, is a positive integer below 2^31: larger
/// ones (a huge padding, upsampling or declared shape) cannot be addressed by the kernels or
/// passed back to JavaScript.
fn check_dims(layer: &dyn Layer, what: &str, shapes: &[Vec<usize>]) -> Result<()> {
    match shapes
        .iter()
        .find(|s| s.iter().any(|&d| d == 0 || d > crate::alloc::MAX_DIM))
    {
        Some(bad) => Err(Error::Invalid(format!(
            "layer '{}' ({}): {what} shape {bad:?} has a dimension that is 0 or not below 2^31",
            layer.name(),
            layer.class_name()
        ))),
        None => Ok(()),
    }
}

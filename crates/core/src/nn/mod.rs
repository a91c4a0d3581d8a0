//! Keras-style building blocks: layers, initializers, losses, metrics, optimizers, the
//! sequential model with its `fit` loop, and model files.

pub mod attention_maps;
pub mod callbacks;
pub mod cell;
pub mod checkpoint;
pub mod explain;
pub mod fit;
pub mod gpu_model;
pub mod init;
pub mod io;
pub mod layers;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod options;
pub mod param;
pub mod privacy;
pub mod quantize;
pub mod schedule;

pub use cell::{LayerCell, SharedLayer};
pub use layers::Layer;
pub use model::{Model, Sequential};
pub use param::Param;

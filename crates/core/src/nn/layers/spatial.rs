//! Layer family `spatial` (filled in by its issue-3 work; empty until then).

use super::{Common, Layer};
use crate::nn::options::Options;
use crate::Result;

/// (class name, Keras base name) of every layer in this family.
pub(super) const CLASSES: &[(&str, &str)] = &[];

/// Creates a layer of this family, or `None` for other class names.
pub(super) fn create(_class_name: &str, _o: &mut Options, _common: &Common) -> Option<Result<Box<dyn Layer>>> {
    None
}

//! Differentiable tensor ops: each computes its value with a CPU kernel and records the
//! [`Op`](crate::backprop::Op) its gradient needs.

mod arith;
mod nn;

pub use arith::*;
pub use nn::*;

//! Linear algebra, elementwise arithmetic and reductions.

use super::gpu::{self, on_gpu};
use crate::backprop::Op;
use crate::cpu::elementwise::{map_binary, map_unary};
use crate::cpu::matmul::sgemm;
use cortex_wgpu::BinaryOp;

use crate::{Error, Result, Tensor};

fn same_shape(op: &str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::shape(op, a.shape(), b.shape()));
    }
    Ok(())
}

/// Matrix product of `[m,k]` and `[k,n]`.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.rank() != 2 || b.rank() != 2 || a.shape()[1] != b.shape()[0] {
        return Err(Error::shape(
            "matMul",
            format!("[m, k] and [k, n] with matching k (lhs is {:?})", a.shape()),
            b.shape(),
        ));
    }
    if on_gpu("matMul", &[a, b])? {
        return gpu::matmul(a, b);
    }
    let (m, k, n) = (a.shape()[0], a.shape()[1], b.shape()[1]);
    let mut out = crate::alloc::zeros_or_unwind("a matmul output", m.saturating_mul(n));
    sgemm(m, n, k, a.data(), false, b.data(), false, &mut out, false, true);
    Ok(Tensor::from_op(
        out,
        vec![m, n],
        |_| Op::MatMul(a.clone(), b.clone()),
        &[a, b],
    ))
}

/// `x[..., in] · w[in, out] (+ b[out])`: the dense layer's affine map on the last axis.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let din = *x.shape().last().unwrap_or(&0);
    if w.rank() != 2 || w.shape()[0] != din || x.rank() == 0 {
        return Err(Error::shape(
            "dense",
            format!("input [..., {}]", w.shape()[0]),
            x.shape(),
        ));
    }
    let dout = w.shape()[1];
    if let Some(b) = b {
        if b.shape() != [dout] {
            return Err(Error::shape("dense bias", [dout], b.shape()));
        }
    }
    let mut inputs = vec![x, w];
    inputs.extend(b);
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("rank checked") = dout;
    if on_gpu("dense", &inputs)? {
        return gpu::linear(x, w, b, shape);
    }
    let rows = x.len() / din.max(1);
    let mut out = crate::alloc::zeros_or_unwind("a linear output", rows.saturating_mul(dout));
    if let Some(b) = b {
        for row in out.chunks_exact_mut(dout) {
            row.copy_from_slice(b.data());
        }
    }
    sgemm(
        rows,
        dout,
        din,
        x.data(),
        false,
        w.data(),
        false,
        &mut out,
        b.is_some(),
        true,
    );
    Ok(Tensor::from_op(
        out,
        shape,
        |_| Op::Linear {
            x: x.clone(),
            w: w.clone(),
            b: b.cloned(),
        },
        &inputs,
    ))
}

/// Splits a packed tensor into consecutive pieces of the given shapes (how multi-output ops
/// return several tensors: gradients of the pieces flow back into the packed tensor).
pub fn split(packed: &Tensor, shapes: &[Vec<usize>]) -> Result<Vec<Tensor>> {
    let total: usize = shapes.iter().map(|s| crate::tensor::numel(s)).sum();
    if total != packed.len() {
        return Err(Error::shape(
            "split",
            format!("pieces totalling {} values", packed.len()),
            shapes,
        ));
    }
    if on_gpu("split", &[packed])? {
        return super::gpu_layout::split(packed, shapes);
    }
    let mut start = 0;
    let mut out = Vec::with_capacity(shapes.len());
    for shape in shapes {
        let n = crate::tensor::numel(shape);
        let data = packed.data()[start..start + n].to_vec();
        let s = start;
        out.push(Tensor::from_op(
            data,
            shape.clone(),
            |_| Op::Slice {
                x: packed.clone(),
                start: s,
            },
            &[packed],
        ));
        start += n;
    }
    Ok(out)
}

/// Records a value computed by a fused kernel together with the [`CustomOp`](crate::backprop::CustomOp)
/// that differentiates it.
pub fn custom(
    data: Vec<f32>,
    shape: Vec<usize>,
    op: impl FnOnce() -> Box<dyn crate::backprop::CustomOp>,
    inputs: &[&Tensor],
) -> Result<Tensor> {
    if data.len() != crate::tensor::numel(&shape) {
        return Err(Error::shape(
            "custom op output",
            crate::tensor::numel(&shape),
            data.len(),
        ));
    }
    if inputs.iter().any(|t| t.device() == crate::Device::Gpu) {
        return Err(gpu::no_gpu_kernel(op().name()));
    }
    Ok(Tensor::from_op(data, shape, |_| Op::Custom(op()), inputs))
}

/// Elementwise `a + b` (equal shapes).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_shape("add", a, b)?;
    if on_gpu("add", &[a, b])? {
        return gpu::binary(BinaryOp::Add, a, b);
    }
    let out = map_binary(a.data(), b.data(), |x, y| x + y);
    Ok(Tensor::from_op(
        out,
        a.shape().to_vec(),
        |_| Op::Add(a.clone(), b.clone()),
        &[a, b],
    ))
}

/// Elementwise `a - b` (equal shapes).
pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_shape("sub", a, b)?;
    if on_gpu("sub", &[a, b])? {
        return gpu::binary(BinaryOp::Sub, a, b);
    }
    let out = map_binary(a.data(), b.data(), |x, y| x - y);
    Ok(Tensor::from_op(
        out,
        a.shape().to_vec(),
        |_| Op::Sub(a.clone(), b.clone()),
        &[a, b],
    ))
}

/// Elementwise `a * b` (equal shapes).
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_shape("mul", a, b)?;
    if on_gpu("mul", &[a, b])? {
        return gpu::binary(BinaryOp::Mul, a, b);
    }
    let out = map_binary(a.data(), b.data(), |x, y| x * y);
    Ok(Tensor::from_op(
        out,
        a.shape().to_vec(),
        |_| Op::Mul(a.clone(), b.clone()),
        &[a, b],
    ))
}

/// `x + b` with `b` (shape `[c]`) broadcast along the last axis of `x`.
pub fn add_last_axis(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    let c = *x.shape().last().unwrap_or(&0);
    if b.shape() != [c] {
        return Err(Error::shape("bias add", [c], b.shape()));
    }
    if on_gpu("bias add", &[x, b])? {
        return gpu::add_last_axis(x, b);
    }
    let mut out = x.to_vec();
    for row in out.chunks_exact_mut(c.max(1)) {
        row.iter_mut().zip(b.data()).for_each(|(o, v)| *o += v);
    }
    Ok(Tensor::from_op(
        out,
        x.shape().to_vec(),
        |_| Op::AddLastAxis(x.clone(), b.clone()),
        &[x, b],
    ))
}

/// `x * s` for a constant scalar.
pub fn scale(x: &Tensor, s: f32) -> Result<Tensor> {
    if on_gpu("scale", &[x])? {
        return gpu::scale(x, s);
    }
    let out = map_unary(x.data(), |v| v * s);
    Ok(Tensor::from_op(
        out,
        x.shape().to_vec(),
        |_| Op::Scale(x.clone(), s),
        &[x],
    ))
}

/// Sum of all elements (a scalar).
pub fn sum(x: &Tensor) -> Result<Tensor> {
    if on_gpu("sum", &[x])? {
        return gpu::reduce_all(x, false);
    }
    let s = x.data().iter().map(|&v| v as f64).sum::<f64>() as f32;
    Ok(Tensor::from_op(vec![s], vec![], |_| Op::Sum(x.clone()), &[x]))
}

/// Mean of all elements (a scalar).
pub fn mean(x: &Tensor) -> Result<Tensor> {
    if on_gpu("mean", &[x])? {
        return gpu::reduce_all(x, true);
    }
    let s = x.data().iter().map(|&v| v as f64).sum::<f64>() / x.len().max(1) as f64;
    Ok(Tensor::from_op(vec![s as f32], vec![], |_| Op::Mean(x.clone()), &[x]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backprop::backward;

    #[test]
    fn linear_gradients_match_finite_differences() {
        let x = Tensor::variable((0..6).map(|i| i as f32 * 0.3 - 0.8).collect(), &[2, 3]).unwrap();
        let w = Tensor::variable((0..12).map(|i| (i as f32 * 0.7).sin()).collect(), &[3, 4]).unwrap();
        let b = Tensor::variable(vec![0.1, -0.2, 0.3, 0.05], &[4]).unwrap();
        let f = |x: &Tensor, w: &Tensor| {
            let y = linear(x, w, Some(&b)).unwrap();
            sum(&mul(&y, &y).unwrap()).unwrap()
        };
        let loss = f(&x, &w);
        let grads = backward(&loss).unwrap();
        let gw = grads.get(&w).unwrap();
        for i in 0..12 {
            let mut plus = w.to_vec();
            plus[i] += 1e-2;
            let mut minus = w.to_vec();
            minus[i] -= 1e-2;
            let fd = (f(&x, &Tensor::new(plus, &[3, 4]).unwrap()).item().unwrap()
                - f(&x, &Tensor::new(minus, &[3, 4]).unwrap()).item().unwrap())
                / 2e-2;
            assert!((fd - gw[i]).abs() < 1e-2 * (1.0 + fd.abs()), "{i}: {fd} vs {}", gw[i]);
        }
        assert_eq!(grads.get(&b).unwrap().len(), 4);
        assert_eq!(grads.get(&x).unwrap().len(), 6);
    }

    #[test]
    fn backward_frees_the_graph_unless_asked_to_retain_it() {
        let w = Tensor::variable(vec![1.0, 2.0, 3.0], &[3]).unwrap();
        let loss = sum(&mul(&w, &w).unwrap()).unwrap();
        let first = crate::backprop::backward_retaining_graph(&loss).unwrap();
        let second = backward(&loss).unwrap();
        assert_eq!(first.get(&w).unwrap(), second.get(&w).unwrap());
        assert_eq!(second.get(&w).unwrap(), &[2.0, 4.0, 6.0]);
        let err = backward(&loss).err().expect("a second backward fails").to_string();
        assert!(err.contains("freed by an earlier backward pass"), "{err}");
    }

    #[test]
    fn shape_errors_say_what_was_expected() {
        let a = Tensor::zeros(&[2, 3]);
        let b = Tensor::zeros(&[4, 2]);
        let e = matmul(&a, &b).unwrap_err().to_string();
        assert!(e.contains("matMul") && e.contains("[4, 2]"), "{e}");
    }
}

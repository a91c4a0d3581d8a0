//! LSTM training benchmark: prints one JSON line with train and predict samples/s.
//!
//! Model: embedding(1000, 64) -> LSTM(128, last step) -> dense(10) -> softmax with sparse
//! categorical cross-entropy, Adam; random tokens, sequence length 100, batch 256
//! (`SIZES=small`: batch 8, sequence 10, for software adapters such as lavapipe).
//! Every op of the train step runs on the GPU; the only readback is the loss, once per step.
//! Times are medians after warm-up. `vs_h200_pytorch` is the ratio to 83,000 samples/s,
//! PyTorch/cuDNN on an H200 for the same model. The labels are a function of the last
//! token, so the loss (printed as `loss_first` / `loss_last` over the run) must fall.

use std::time::Instant;

use cortex_wgpu::{AdamParams, CrossEntropyInput, Gpu, GpuTensor, Result};

const VOCAB: usize = 1000;
const EMBED: usize = 64;
const UNITS: usize = 128;
const CLASSES: usize = 10;
const ANCHOR_SAMPLES_PER_S: f64 = 83_000.0;

struct Rng(u64);

impl Rng {
    /// Uniform in [0, 1).
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }

    fn uniform(&mut self, n: usize, limit: f32) -> Vec<f32> {
        (0..n).map(|_| (self.next() * 2.0 - 1.0) * limit).collect()
    }
}

/// A trainable tensor with its Adam moments.
struct Param {
    w: GpuTensor,
    m: GpuTensor,
    v: GpuTensor,
}

impl Param {
    fn new(gpu: &Gpu, data: &[f32], shape: &[usize]) -> Result<Param> {
        Ok(Param {
            w: gpu.upload(data, shape)?,
            m: gpu.zeros(shape)?,
            v: gpu.zeros(shape)?,
        })
    }
}

struct Model {
    emb: Param,
    kernel: Param,
    recurrent: Param,
    bias: Param,
    dense: Param,
    dense_bias: Param,
}

impl Model {
    fn new(gpu: &Gpu, rng: &mut Rng) -> Result<Model> {
        let glorot = |fan_in: usize, fan_out: usize| (6.0 / (fan_in + fan_out) as f32).sqrt();
        // Keras unit_forget_bias: the forget gate's bias starts at 1.
        let bias: Vec<f32> = (0..4 * UNITS)
            .map(|j| if (UNITS..2 * UNITS).contains(&j) { 1.0 } else { 0.0 })
            .collect();
        Ok(Model {
            emb: Param::new(gpu, &rng.uniform(VOCAB * EMBED, 0.05), &[VOCAB, EMBED])?,
            kernel: Param::new(
                gpu,
                &rng.uniform(EMBED * 4 * UNITS, glorot(EMBED, 4 * UNITS)),
                &[EMBED, 4 * UNITS],
            )?,
            recurrent: Param::new(
                gpu,
                &rng.uniform(UNITS * 4 * UNITS, glorot(UNITS, 4 * UNITS)),
                &[UNITS, 4 * UNITS],
            )?,
            bias: Param::new(gpu, &bias, &[4 * UNITS])?,
            dense: Param::new(
                gpu,
                &rng.uniform(UNITS * CLASSES, glorot(UNITS, CLASSES)),
                &[UNITS, CLASSES],
            )?,
            dense_bias: Param::new(gpu, &[0.0; CLASSES], &[CLASSES])?,
        })
    }

    /// Forward to the logits; returns (embedded input, LSTM forward, logits).
    fn forward(&self, gpu: &Gpu, tokens: &GpuTensor) -> Result<(GpuTensor, cortex_wgpu::LstmForward, GpuTensor)> {
        let x = gpu.embedding(&self.emb.w, tokens)?;
        let xp = gpu.lstm_input_projection(&x, &self.kernel.w, &self.bias.w)?;
        let lstm = gpu.lstm_forward(&xp, &self.recurrent.w, None, None)?;
        let logits = gpu.bias_add(
            &gpu.matmul(&lstm.h_last, &self.dense.w, false, false)?,
            &self.dense_bias.w,
        )?;
        Ok((x, lstm, logits))
    }

    /// One train step; returns the loss (the step's only readback).
    fn train_step(&mut self, gpu: &Gpu, tokens: &GpuTensor, labels: &GpuTensor, step: u32) -> Result<f32> {
        let (x, lstm, logits) = self.forward(gpu, tokens)?;
        let ce = gpu.sparse_categorical_crossentropy(&logits, labels, CrossEntropyInput::Logits)?;
        let d_dense = gpu.matmul(&lstm.h_last, &ce.grad, true, false)?;
        let d_dense_bias = gpu.sum_rows(&ce.grad)?;
        let dh = gpu.matmul(&ce.grad, &self.dense.w, false, true)?;
        let bwd = gpu.lstm_backward(&lstm.saved, &self.recurrent.w, None, Some(&dh))?;
        let g = gpu.lstm_weight_grads(&x, &self.kernel.w, &lstm.saved, &bwd.d_gates)?;
        let d_emb = gpu.embedding_backward(tokens, &g.dx, VOCAB)?;
        let hp = AdamParams {
            lr: 0.005,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-7,
            step,
        };
        for (p, grad) in [
            (&mut self.emb, &d_emb),
            (&mut self.kernel, &g.dw),
            (&mut self.recurrent, &g.du),
            (&mut self.bias, &g.dbias),
            (&mut self.dense, &d_dense),
            (&mut self.dense_bias, &d_dense_bias),
        ] {
            gpu.adam_update(&mut p.w, grad, &mut p.m, &mut p.v, &hp)?;
        }
        Ok(gpu.download(&ce.loss)?[0])
    }
}

/// Times each stage of one train step (waiting after each) into `acc` (stage name, ms list);
/// set `BREAKDOWN=1` to include the medians in the JSON line.
fn profile_step(
    model: &Model,
    gpu: &Gpu,
    tokens: &GpuTensor,
    labels: &GpuTensor,
    acc: &mut Vec<(&'static str, Vec<f64>)>,
) -> Result<()> {
    let mut t = Instant::now();
    let mut i = 0;
    let mut lap = |name: &'static str, acc: &mut Vec<(&'static str, Vec<f64>)>| -> Result<()> {
        gpu.wait()?;
        if acc.len() <= i {
            acc.push((name, Vec::new()));
        }
        acc[i].1.push(t.elapsed().as_secs_f64() * 1e3);
        i += 1;
        t = Instant::now();
        Ok(())
    };
    let x = gpu.embedding(&model.emb.w, tokens)?;
    lap("embedding", acc)?;
    let xp = gpu.lstm_input_projection(&x, &model.kernel.w, &model.bias.w)?;
    lap("input_projection", acc)?;
    let lstm = gpu.lstm_forward(&xp, &model.recurrent.w, None, None)?;
    lap("lstm_forward", acc)?;
    let logits = gpu.bias_add(
        &gpu.matmul(&lstm.h_last, &model.dense.w, false, false)?,
        &model.dense_bias.w,
    )?;
    let ce = gpu.sparse_categorical_crossentropy(&logits, labels, CrossEntropyInput::Logits)?;
    let d_dense = gpu.matmul(&lstm.h_last, &ce.grad, true, false)?;
    let dh = gpu.matmul(&ce.grad, &model.dense.w, false, true)?;
    lap("dense_and_loss", acc)?;
    let bwd = gpu.lstm_backward(&lstm.saved, &model.recurrent.w, None, Some(&dh))?;
    lap("lstm_backward", acc)?;
    let desc = |m, n, k, ta, tb| cortex_wgpu::MatmulDesc {
        m,
        n,
        k,
        batch: 1,
        trans_a: ta,
        trans_b: tb,
        stride_a: 0,
        stride_b: 0,
    };
    let (rows, g) = (bwd.d_gates.len() / (4 * UNITS), 4 * UNITS);
    let dx = gpu.matmul_with(&bwd.d_gates, &model.kernel.w, &desc(rows, EMBED, g, false, true))?;
    lap("gemm_dx", acc)?;
    drop(gpu.matmul_with(&x, &bwd.d_gates, &desc(EMBED, g, rows, true, false))?);
    lap("gemm_dw", acc)?;
    drop(gpu.matmul_with(&lstm.saved.h_prev, &bwd.d_gates, &desc(UNITS, g, rows, true, false))?);
    lap("gemm_du", acc)?;
    let ones = gpu.upload(&vec![1.0; rows], &[1, rows])?;
    drop(gpu.matmul_with(&ones, &bwd.d_gates, &desc(1, g, rows, false, false))?);
    lap("dbias", acc)?;
    let d_emb = gpu.embedding_backward(
        tokens,
        &dx.reshape(&[tokens.shape()[0], tokens.shape()[1], EMBED])?,
        VOCAB,
    )?;
    lap("embedding_backward", acc)?;
    drop((d_emb, d_dense));
    drop(gpu.download(&ce.loss)?);
    lap("loss_readback", acc)?;
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() -> Result<()> {
    let small = std::env::var("SIZES").is_ok_and(|v| v == "small");
    // 50 warm-up steps (~250 ms on an H200): an idle GPU needs a while to reach full clocks.
    let (batch, seq, warm, reps) = if small { (8, 10, 3, 20) } else { (256, 100, 50, 20) };
    let gpu = Gpu::new()?;
    let s = gpu.adapter_summary().clone();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut model = Model::new(&gpu, &mut rng)?;
    let tok: Vec<f32> = (0..batch * seq)
        .map(|_| ((rng.next() * VOCAB as f32) as usize).min(VOCAB - 1) as f32)
        .collect();
    // Learnable labels: the class is the last token mod 10.
    let lab: Vec<f32> = (0..batch)
        .map(|b| (tok[b * seq + seq - 1] as usize % CLASSES) as f32)
        .collect();
    let tokens = gpu.upload(&tok, &[batch, seq])?;
    let labels = gpu.upload(&lab, &[batch])?;

    let mut step = 0u32;
    let mut losses = Vec::new();
    for _ in 0..warm {
        step += 1;
        losses.push(model.train_step(&gpu, &tokens, &labels, step)?);
    }
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        step += 1;
        let t0 = Instant::now();
        losses.push(model.train_step(&gpu, &tokens, &labels, step)?);
        gpu.wait()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    let train_s = median(times);

    for _ in 0..warm {
        drop(gpu.softmax(&model.forward(&gpu, &tokens)?.2)?);
        gpu.wait()?;
    }
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t0 = Instant::now();
        let probs = gpu.softmax(&model.forward(&gpu, &tokens)?.2)?;
        gpu.wait()?;
        times.push(t0.elapsed().as_secs_f64());
        drop(probs);
    }
    let predict_s = median(times);

    // The two recurrence dispatches alone (the rest of the step is GEMMs and element-wise ops).
    let xp = gpu.lstm_input_projection(&gpu.embedding(&model.emb.w, &tokens)?, &model.kernel.w, &model.bias.w)?;
    let dh = gpu.zeros(&[batch, UNITS])?;
    let u = &model.recurrent.w;
    let (mut fwd_t, mut bwd_t) = (Vec::new(), Vec::new());
    for i in 0..warm + reps {
        let t0 = Instant::now();
        let f = gpu.lstm_forward(&xp, u, None, None)?;
        gpu.wait()?;
        let t1 = Instant::now();
        drop(gpu.lstm_backward(&f.saved, u, None, Some(&dh))?);
        gpu.wait()?;
        if i >= warm {
            fwd_t.push((t1 - t0).as_secs_f64());
            bwd_t.push(t1.elapsed().as_secs_f64());
        }
    }
    let (fwd_s, bwd_s) = (median(fwd_t), median(bwd_t));

    let mut breakdown = String::new();
    if std::env::var("BREAKDOWN").is_ok_and(|v| v == "1") {
        let mut acc = Vec::new();
        for _ in 0..reps {
            profile_step(&model, &gpu, &tokens, &labels, &mut acc)?;
        }
        let parts: Vec<String> = acc
            .into_iter()
            .map(|(n, v)| format!("\"{n}\":{:.3}", median(v)))
            .collect();
        breakdown = format!(",\"breakdown_ms\":{{{}}}", parts.join(","));
    }

    let train_sps = batch as f64 / train_s;
    let finite = losses.iter().all(|l| l.is_finite());
    println!(
        "{{\"adapter\":{},\"checks\":{},\"backend\":{},\"device_type\":{},\"sizes\":{},\"batch\":{batch},\"seq_len\":{seq},\"vocab\":{VOCAB},\"embed\":{EMBED},\"units\":{UNITS},\"classes\":{CLASSES},\"steps_timed\":{reps},\"train_ms_per_step\":{:.3},\"lstm_train_samples_per_s\":{train_sps:.1},\"vs_h200_pytorch\":{:.4},\"predict_ms_per_batch\":{:.3},\"lstm_predict_samples_per_s\":{:.1},\"recurrence_forward_ms\":{:.3},\"recurrence_backward_ms\":{:.3},\"loss_first\":{:.5},\"loss_last\":{:.5},\"loss_decreased\":{}{breakdown}}}",
        json_str(&s.name),
        json_str(gpu.shader_checks().name()),
        json_str(&s.backend),
        json_str(&s.device_type),
        json_str(if small { "small" } else { "full" }),
        train_s * 1e3,
        train_sps / ANCHOR_SAMPLES_PER_S,
        predict_s * 1e3,
        batch as f64 / predict_s,
        fwd_s * 1e3,
        bwd_s * 1e3,
        losses[0],
        losses[losses.len() - 1],
        finite && losses[losses.len() - 1] < losses[0],
    );
    Ok(())
}

//! Fused recurrent kernels: SimpleRNN, LSTM and GRU (Keras 3, `reset_after`) over a whole
//! sequence, forward and backward through time, in one call each.
//!
//! Layout (Keras): `x [batch, time, in]`, `kernel [in, G*u]`, `recurrent [u, G*u]`, where `G`
//! is the number of gate blocks (SimpleRNN 1; LSTM 4 in the order i, f, c, o; GRU 3 in the order
//! z, r, h). The LSTM and SimpleRNN bias is `[G*u]`; the GRU bias is `[2, 3u]` (input bias, then
//! recurrent bias, because with `reset_after` the reset gate multiplies `h·U_h + b_rh`).
//!
//! The batch is split into one chunk per rayon thread and each chunk runs the whole pass on its
//! own, so threads never synchronise per step. Forward: one large GEMM projects every timestep
//! of the chunk at once (`x·W + b`, `[rows*time, G*u]`); then each step multiplies the state by
//! the recurrent kernel and applies the gate math in place, in one vectorised pass per row.
//! Backward walks the steps in reverse, storing every step's gate gradients; the weight
//! gradients and the input gradient then come from three large GEMMs over all the chunk's steps
//! at once, and the chunks' weight gradients are summed. (With fewer batch rows than threads,
//! those large GEMMs run once over the whole batch, multi-threaded, instead.)
//!
//! Masking follows Keras: a masked step (mask 0) keeps the previous state; its output is the
//! previous state too, or zeros with `zero_masked_outputs` (what `Bidirectional` asks for).
//! Every per-step buffer is indexed by the *input* time index, so `go_backwards` only changes
//! the order steps are visited in.

use std::sync::Mutex;

use gemm::Parallelism;
use rayon::prelude::*;

use crate::cpu::elementwise::Activation;
use crate::cpu::gemv::Packed;
use crate::cpu::matmul::sgemm;

mod cells;

use cells::{gru_step, lstm_step, sigmoid_fast, simple_step, tanh_fast};

/// Which recurrent cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    /// `h = act(x·W + h·U + b)`.
    SimpleRnn,
    /// Long short-term memory, gates i, f, c, o.
    Lstm,
    /// Gated recurrent unit with `reset_after` (Keras 3 default), gates z, r, h.
    Gru,
}

impl Cell {
    /// Number of `units`-wide gate blocks in the kernels.
    pub fn gates(self) -> usize {
        match self {
            Cell::SimpleRnn => 1,
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }

    /// Length of the bias vector for `units`.
    pub fn bias_len(self, units: usize) -> usize {
        match self {
            Cell::Gru => 6 * units,
            c => c.gates() * units,
        }
    }
}

/// Sizes and options of one recurrent pass.
#[derive(Clone, Debug)]
pub struct RnnSpec {
    /// The cell.
    pub cell: Cell,
    /// Batch size.
    pub batch: usize,
    /// Number of timesteps.
    pub time: usize,
    /// Input features.
    pub input: usize,
    /// Hidden units.
    pub units: usize,
    /// Candidate / output activation (Keras `activation`, default tanh).
    pub activation: Activation,
    /// Gate activation (Keras `recurrent_activation`, default sigmoid; unused by SimpleRNN).
    pub recurrent_activation: Activation,
    /// Visit the timesteps last to first.
    pub go_backwards: bool,
    /// Produce the output of every step (otherwise only the final states).
    pub return_sequences: bool,
    /// Write step outputs at their input time index instead of in processing order (only
    /// differs with `go_backwards`; `Bidirectional` uses it to avoid a separate reversal).
    pub output_in_input_order: bool,
    /// Masked steps output zeros instead of the previous state.
    pub zero_masked_outputs: bool,
    /// Save what [`rnn_backward`] needs. Inference passes false: the per-step copies of the
    /// states into the tape are then skipped, and the tape holds only the gate buffer.
    pub keep_tape: bool,
}

impl RnnSpec {
    pub(crate) fn g(&self) -> usize {
        self.cell.gates() * self.units
    }
    fn input_time(&self, step: usize) -> usize {
        if self.go_backwards {
            self.time - 1 - step
        } else {
            step
        }
    }
    fn output_time(&self, step: usize) -> usize {
        if self.output_in_input_order {
            self.input_time(step)
        } else {
            step
        }
    }
    /// Whether backward needs the gate pre-activations. Not for activations whose derivative
    /// follows from their output alone (sigmoid, tanh) or depends on the input only through its
    /// sign, which the output shares (relu, elu, selu, leaky relu, linear): derivatives are then
    /// taken at `x = y`, and a whole tape buffer is saved.
    fn keeps_pre(&self) -> bool {
        let needs_input = |a: Activation| {
            matches!(
                a,
                Activation::Gelu | Activation::GeluTanh | Activation::Swish | Activation::Softplus
            )
        };
        needs_input(self.activation) || (self.cell != Cell::SimpleRnn && needs_input(self.recurrent_activation))
    }
}

/// The operands of one pass (row-major slices; shapes as in the module docs).
#[derive(Clone, Copy)]
pub struct RnnInputs<'a> {
    /// `[batch, time, input]`.
    pub x: &'a [f32],
    /// `[input, G*u]`.
    pub kernel: &'a [f32],
    /// `[u, G*u]`.
    pub recurrent: &'a [f32],
    /// `[G*u]`, or `[6u]` for GRU; `None` without bias.
    pub bias: Option<&'a [f32]>,
    /// Initial hidden state `[batch, u]` (zeros when `None`).
    pub h0: Option<&'a [f32]>,
    /// Initial LSTM cell state `[batch, u]` (zeros when `None`).
    pub c0: Option<&'a [f32]>,
    /// Keras mask `[batch, time]`, nonzero = keep.
    pub mask: Option<&'a [f32]>,
    /// `recurrent` quantized for int8 inference (`model.quantize`): `h·U` per step in int8.
    pub recurrent_int8: Option<&'a crate::cpu::int8::PackedInt8>,
    /// The input projection as a lookup (an Embedding feeding the layer, in inference): each
    /// step reads its `x·W + b` as a table row, and `x` is not read.
    pub embedded: Option<Embedded<'a>>,
}

/// Token ids and the input projection of every token, for [`RnnInputs::embedded`].
#[derive(Clone, Copy)]
pub struct Embedded<'a> {
    /// `[batch, time]` row indices of `table`.
    pub ids: &'a [u32],
    /// `[vocabulary, G*u]`: `embeddings · W + b`.
    pub table: &'a [f32],
}

/// What the backward pass needs from the forward pass (all indexed by input time).
#[derive(Default)]
pub struct RnnTape {
    /// Gate activations `[batch, time, G*u]`.
    gates: Vec<f32>,
    /// Gate pre-activations, kept only when [`RnnSpec::keeps_pre`].
    pre: Vec<f32>,
    /// Hidden state entering each step `[batch, time, u]`.
    hprev: Vec<f32>,
    /// LSTM: cell state entering each step.
    cprev: Vec<f32>,
    /// LSTM: new cell state of each step, kept only alongside `pre`.
    cnew: Vec<f32>,
    /// LSTM: `activation(new cell state)`.
    tc: Vec<f32>,
    /// GRU: `h·U_h + b_rh`, the term the reset gate multiplies.
    rh: Vec<f32>,
}

impl Drop for RnnTape {
    fn drop(&mut self) {
        for buf in [
            &mut self.gates,
            &mut self.pre,
            &mut self.hprev,
            &mut self.cprev,
            &mut self.cnew,
            &mut self.tc,
            &mut self.rh,
        ] {
            recycle(std::mem::take(buf));
        }
    }
}

/// Results of [`rnn_forward`].
pub struct RnnForward {
    /// Step outputs `[batch, time, u]` (empty unless `return_sequences`).
    pub seq: Vec<f32>,
    /// Final hidden state `[batch, u]`.
    pub h: Vec<f32>,
    /// Final LSTM cell state `[batch, u]` (empty for other cells).
    pub c: Vec<f32>,
    /// Saved activations for [`rnn_backward`].
    pub tape: RnnTape,
}

/// Which gradients to compute.
#[derive(Clone, Copy, Debug, Default)]
pub struct RnnWanted {
    /// Input gradient.
    pub x: bool,
    /// Kernel gradient.
    pub kernel: bool,
    /// Recurrent-kernel gradient.
    pub recurrent: bool,
    /// Bias gradient.
    pub bias: bool,
}

/// Results of [`rnn_backward`] (`None` where not wanted).
pub struct RnnGrads {
    /// `[batch, time, input]`.
    pub x: Option<Vec<f32>>,
    /// `[input, G*u]`.
    pub kernel: Option<Vec<f32>>,
    /// `[u, G*u]`.
    pub recurrent: Option<Vec<f32>>,
    /// Same layout as the bias.
    pub bias: Option<Vec<f32>>,
    /// Gradient of the initial hidden state `[batch, u]`.
    pub h0: Vec<f32>,
    /// Gradient of the initial LSTM cell state `[batch, u]` (empty for other cells).
    pub c0: Vec<f32>,
}

// ---------------------------------------------------------------------------------------------
// Buffer recycling. A training step allocates tens of MB of tape per layer and frees it after
// backward; fresh pages cost a page fault each (very expensive in VMs), which measured as a
// quarter of the forward time. Freed tape buffers are kept here and reused by the next call.

/// Buffers shorter than this are left to malloc.
const POOL_MIN_LEN: usize = 1 << 14;
/// Upper bound of the memory the pool keeps (floats): 256 MB.
const POOL_MAX_FLOATS: usize = 64 << 20;

static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// A buffer of `len` floats, from the pool when one fits. Unless `zeroed`, its contents are
/// stale values, for buffers the kernels overwrite before reading.
fn take(len: usize, zeroed: bool) -> Vec<f32> {
    if len >= POOL_MIN_LEN {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        let best = pool
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len)
            .min_by_key(|(_, v)| v.capacity());
        if let Some(i) = best.map(|(i, _)| i) {
            let mut v = pool.swap_remove(i);
            drop(pool);
            if zeroed {
                v.clear();
            }
            v.truncate(len);
            v.resize(len, 0.0);
            return v;
        }
    }
    vec![0.0; len]
}

/// Returns a buffer to the pool (or frees it when the pool is full).
fn recycle(v: Vec<f32>) {
    if v.capacity() < POOL_MIN_LEN {
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let held: usize = pool.iter().map(Vec::capacity).sum();
    if held + v.capacity() <= POOL_MAX_FLOATS {
        pool.push(v);
    }
}

/// Binds `$act`, `$rec` (the activation and recurrent activation) and `$dact`, `$drec` (their
/// derivatives given input and output) as closures and evaluates `$body`: monomorphised on the
/// fast tanh / sigmoid for the default pair, so the cell loops vectorise; any other pair goes
/// through [`Activation`] per element.
macro_rules! with_activations {
    ($spec:expr, $fma:ident, |$act:ident, $rec:ident, $dact:ident, $drec:ident| $body:expr) => {
        match ($spec.activation, $spec.recurrent_activation) {
            (Activation::Tanh, Activation::Sigmoid) => {
                let ($act, $rec) = (tanh_fast::<$fma>, sigmoid_fast::<$fma>);
                let $dact = |_: f32, y: f32| 1.0 - y * y;
                let $drec = |_: f32, y: f32| y * (1.0 - y);
                $body
            }
            (a, r) => {
                let ($act, $rec) = (move |x: f32| a.apply(x), move |x: f32| r.apply(x));
                let $dact = move |x: f32, y: f32| a.derivative(x, y);
                let $drec = move |x: f32, y: f32| r.derivative(x, y);
                $body
            }
        }
    };
}

/// Runs `$imp(args)` compiled for the widest vector unit the CPU has: the cell loops vectorise
/// to the target's width, while the crate itself is built for the x86-64 baseline (SSE2).
/// `$imp` takes `const FMA: bool`, true in the builds whose target has fused multiply-add.
macro_rules! multiversion {
    ($name:ident => $imp:ident ($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                fn v4($($arg: $ty),*) $(-> $ret)? {
                    $imp::<true>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn v3($($arg: $ty),*) $(-> $ret)? {
                    $imp::<true>($($arg),*)
                }
                let v3_ok = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
                if v3_ok && is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has every feature `v4` is compiled for (checked above).
                    return unsafe { v4($($arg),*) };
                }
                if v3_ok {
                    // SAFETY: the CPU has every feature `v3` is compiled for (checked above).
                    return unsafe { v3($($arg),*) };
                }
            }
            $imp::<false>($($arg),*)
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// Asks the CPU to pull rows (`len` floats each, starting at `starts`) of `buf` into L2. Each
/// step touches one row per batch entry, far apart in memory and cold since the large GEMMs wrote
/// them; fetching the next step's rows while this step computes hides that latency.
#[inline(always)]
fn prefetch(buf: &[f32], starts: impl Iterator<Item = usize>, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for start in starts {
        for line in buf[start..start + len].chunks(16) {
            // SAFETY: prefetching has no architectural effect and never faults; the pointer is
            // in bounds anyway.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(line.as_ptr().cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (buf, starts, len);
}

/// `c[m,n] (+)= a[m,k] · b[k,n]` on one thread, each operand given by its (row, column) strides;
/// `c` has row stride `c_rs` and unit column stride.
fn gemm_strided(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
    c: &mut [f32],
    c_rs: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 || k == 0 {
        if !accumulate && k == 0 {
            (0..m).for_each(|i| c[i * c_rs..i * c_rs + n].fill(0.0));
        }
        return;
    }
    assert!((m - 1) * a_rs + (k - 1) * a_cs < a.len(), "rnn gemm: lhs out of bounds");
    assert!((k - 1) * b_rs + (n - 1) * b_cs < b.len(), "rnn gemm: rhs out of bounds");
    assert!((m - 1) * c_rs + n - 1 < c.len(), "rnn gemm: dst out of bounds");
    let (alpha, (a_rs, a_cs), (b_rs, b_cs)) = (
        if accumulate { 1.0 } else { 0.0 },
        (a_rs as isize, a_cs as isize),
        (b_rs as isize, b_cs as isize),
    );
    // SAFETY: the asserts bound every element gemm reads or writes inside the slices, and `c`
    // is a unique borrow, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            c_rs as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            alpha,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

/// How the batch is split: `(rows per chunk, number of chunks, whether each chunk runs the large
/// GEMMs for its own rows)`. One chunk per thread; the large GEMMs run per chunk (on one thread
/// each) when every thread has a chunk, else once over the batch, multi-threaded.
fn chunking(batch: usize) -> (usize, usize, bool) {
    let threads = rayon::current_num_threads().max(1);
    let rows = batch.div_ceil(threads).max(1);
    (rows, batch.div_ceil(rows), batch >= threads)
}

/// Splits `buf` (rows of `row_len`) into `n` chunks of `rows` rows; an empty buffer (a state
/// the cell does not have) gives empty slices, so every buffer yields `n` chunks.
fn split_mut(buf: &mut [f32], row_len: usize, rows: usize, n: usize) -> std::vec::IntoIter<&mut [f32]> {
    let v: Vec<&mut [f32]> = if buf.is_empty() {
        (0..n).map(|_| Default::default()).collect()
    } else {
        buf.chunks_mut(row_len * rows).collect()
    };
    v.into_iter()
}

/// [`split_mut`] for shared (`None`: absent) slices.
fn split(buf: Option<&[f32]>, row_len: usize, rows: usize, n: usize) -> std::vec::IntoIter<Option<&[f32]>> {
    let v: Vec<Option<&[f32]>> = match buf {
        Some(b) if !b.is_empty() => b.chunks(row_len * rows).map(Some).collect(),
        _ => vec![None; n],
    };
    v.into_iter()
}

/// `gates = x·W + b` for the rows of `x` (`[rows, input]`).
fn project(spec: &RnnSpec, x: &[f32], kernel: &[f32], bias: Option<&[f32]>, gates: &mut [f32], parallel: bool) {
    let g = spec.g();
    if let Some(bias) = bias {
        gates
            .chunks_exact_mut(g)
            .for_each(|row| row.copy_from_slice(&bias[..g]));
    }
    sgemm(
        gates.len() / g,
        g,
        spec.input,
        x,
        false,
        kernel,
        false,
        gates,
        bias.is_some(),
        parallel,
    );
}

/// `embeddings · W + b` for every row of an embedding table `[vocabulary, input]`: the input
/// projection of every token, for [`Embedded`].
pub fn projection_table(spec: &RnnSpec, embeddings: &[f32], kernel: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let mut table = vec![0.0; embeddings.len() / spec.input.max(1) * spec.g()];
    project(spec, embeddings, kernel, bias, &mut table, true);
    table
}

// ---------------------------------------------------------------------------------------------
// Forward

/// One chunk's view of every forward buffer.
struct FwdChunk<'a> {
    x: &'a [f32],
    gates: &'a mut [f32],
    pre: &'a mut [f32],
    hprev: &'a mut [f32],
    cprev: &'a mut [f32],
    cnew: &'a mut [f32],
    tc: &'a mut [f32],
    rh: &'a mut [f32],
    seq: &'a mut [f32],
    h: &'a mut [f32],
    c: &'a mut [f32],
    mask: Option<&'a [f32]>,
    /// With [`RnnInputs::embedded`]: the chunk's token ids `[rows, time]`.
    ids: &'a [u32],
}

/// Runs the recurrence over the whole sequence.
pub fn rnn_forward(spec: &RnnSpec, inp: &RnnInputs) -> RnnForward {
    let (b, t, u, g) = (spec.batch, spec.time, spec.units, spec.g());
    let (lstm, gru, keep) = (spec.cell == Cell::Lstm, spec.cell == Cell::Gru, spec.keep_tape);
    let keep_pre = keep && spec.keeps_pre();
    let buf = |len: usize, on: bool| if on { take(len, false) } else { Vec::new() };
    // Looked-up projections are for inference, whose gate buffer only carries the projection.
    let embedded = inp.embedded;
    assert!(
        embedded.is_none() || !keep,
        "rnn: a looked-up input projection keeps no tape"
    );
    let mut tape = RnnTape {
        gates: buf(b * t * g, embedded.is_none()),
        pre: buf(b * t * g, keep_pre),
        hprev: buf(b * t * u, keep),
        cprev: buf(b * t * u, lstm && keep),
        cnew: buf(b * t * u, lstm && keep_pre),
        tc: buf(b * t * u, lstm && keep),
        rh: buf(b * t * u, gru && keep),
    };
    // The sequence output leaves with the result tensor, so it is not taken from the pool.
    let mut seq = if spec.return_sequences {
        vec![0.0; b * t * u]
    } else {
        Vec::new()
    };
    let mut h = inp.h0.map_or_else(|| vec![0.0; b * u], <[f32]>::to_vec);
    let mut c = if lstm {
        inp.c0.map_or_else(|| vec![0.0; b * u], <[f32]>::to_vec)
    } else {
        Vec::new()
    };
    let (rows, n, per_chunk) = chunking(b);
    if !per_chunk && embedded.is_none() {
        project(spec, inp.x, inp.kernel, inp.bias, &mut tape.gates, true);
    }
    let mut chunks: Vec<FwdChunk> = Vec::with_capacity(n);
    {
        let mut x = split(Some(inp.x), t * spec.input, rows, n);
        let mut gates = split_mut(&mut tape.gates, t * g, rows, n);
        let mut pre = split_mut(&mut tape.pre, t * g, rows, n);
        let mut hprev = split_mut(&mut tape.hprev, t * u, rows, n);
        let mut cprev = split_mut(&mut tape.cprev, t * u, rows, n);
        let mut cnew = split_mut(&mut tape.cnew, t * u, rows, n);
        let mut tc = split_mut(&mut tape.tc, t * u, rows, n);
        let mut rh = split_mut(&mut tape.rh, t * u, rows, n);
        let mut seq = split_mut(&mut seq, t * u, rows, n);
        let mut hs = split_mut(&mut h, u, rows, n);
        let mut cs = split_mut(&mut c, u, rows, n);
        let mut masks = split(inp.mask, t, rows, n);
        let mut ids: std::vec::IntoIter<&[u32]> = match embedded {
            Some(e) => e.ids.chunks(t * rows).collect::<Vec<_>>().into_iter(),
            None => vec![&[][..]; n].into_iter(),
        };
        let e = "every buffer splits into n chunks";
        for _ in 0..n {
            chunks.push(FwdChunk {
                x: x.next().expect(e).unwrap_or_default(),
                gates: gates.next().expect(e),
                pre: pre.next().expect(e),
                hprev: hprev.next().expect(e),
                cprev: cprev.next().expect(e),
                cnew: cnew.next().expect(e),
                tc: tc.next().expect(e),
                rh: rh.next().expect(e),
                seq: seq.next().expect(e),
                h: hs.next().expect(e),
                c: cs.next().expect(e),
                mask: masks.next().expect(e),
                ids: ids.next().expect(e),
            });
        }
    }
    chunks
        .into_par_iter()
        .for_each(|ch| forward_chunk(spec, inp, per_chunk, ch));
    RnnForward { seq, h, c, tape }
}

multiversion!(forward_chunk => forward_chunk_impl(spec: &RnnSpec, inp: &RnnInputs, per_chunk: bool, ch: FwdChunk));

#[inline(always)]
fn forward_chunk_impl<const FMA: bool>(spec: &RnnSpec, inp: &RnnInputs, per_chunk: bool, mut ch: FwdChunk) {
    if per_chunk && inp.embedded.is_none() {
        project(spec, ch.x, inp.kernel, inp.bias, ch.gates, false);
    }
    with_activations!(
        spec,
        FMA,
        |act, rec, _dact, _drec| if spec.keep_tape && spec.keeps_pre() {
            forward_steps::<true>(spec, inp, &mut ch, act, rec)
        } else {
            forward_steps::<false>(spec, inp, &mut ch, act, rec)
        }
    )
}

/// Chunks of at most this many rows multiply by a packed `U` (larger ones go through the
/// `gemm` crate, whose kernels reuse each loaded `U` value across rows).
const PACKED_MAX_ROWS: usize = 4;
/// Packing `U` costs about as much as a few steps of the product; shorter sequences skip it.
const PACKED_MIN_STEPS: usize = 16;

/// The recurrence of one chunk; `KEEP` saves pre-activations (and LSTM cell states) as well.
#[inline(always)]
fn forward_steps<const KEEP: bool>(
    spec: &RnnSpec,
    inp: &RnnInputs,
    ch: &mut FwdChunk,
    act: impl Fn(f32) -> f32,
    rec: impl Fn(f32) -> f32,
) {
    let (t, u, g) = (spec.time, spec.units, spec.g());
    let (w_rec, bias) = (inp.recurrent, inp.bias);
    let int8 = inp.recurrent_int8.map(|q| (q, crate::cpu::int8::Int8Kernel::detect()));
    let rows = ch.h.len() / u;
    // Scratch for h·U, and GRU's recurrent bias (zeros without bias), allocated once per chunk.
    let mut r = vec![0.0; rows * g];
    // A looked-up projection is copied here (the cell step overwrites its gates).
    let mut looked_up = if inp.embedded.is_some() {
        vec![0.0; g]
    } else {
        Vec::new()
    };
    let b_rec = match bias {
        Some(b) if spec.cell == Cell::Gru => b[g..].to_vec(),
        _ => vec![0.0; g],
    };
    // A few rows' `h·U` per step reads all of `U` from L2 each time; packed into contiguous
    // column panels once, it streams faster (see `gemv`). Worth the copy over many steps.
    let packed = if int8.is_none() && rows <= PACKED_MAX_ROWS && t >= PACKED_MIN_STEPS {
        Packed::new(u, g, w_rec)
    } else {
        None
    };
    // Without a tape, LSTM's `tanh(c)` and GRU's reset term go to one row of scratch instead.
    let mut scratch = if spec.keep_tape { Vec::new() } else { vec![0.0; u] };
    for s in 0..t {
        let ti = spec.input_time(s);
        let o = spec.output_time(s);
        let tape_rows = if spec.keep_tape { rows } else { 0 };
        for j in 0..tape_rows {
            let at = (j * t + ti) * u;
            ch.hprev[at..at + u].copy_from_slice(&ch.h[j * u..(j + 1) * u]);
            if spec.cell == Cell::Lstm {
                ch.cprev[at..at + u].copy_from_slice(&ch.c[j * u..(j + 1) * u]);
            }
        }
        if s + 1 < t {
            let next = spec.input_time(s + 1);
            match inp.embedded {
                Some(e) => prefetch(e.table, (0..rows).map(|j| ch.ids[j * t + next] as usize * g), g),
                None => prefetch(ch.gates, (0..rows).map(|j| (j * t + next) * g), g),
            }
        }
        // For a few rows, `U` streams through registers from the panels packed above; else
        // `sgemm` (not `gemm_strided`: its small-row path also skips the `gemm` crate's
        // per-call packing of `U`, which for batch-1 inference was half of all the time).
        // int8 inference quantizes each row of h at each step; a state it cannot quantize (not
        // finite) takes the f32 product.
        let int8_done =
            int8.is_some_and(|(q, kernel)| crate::cpu::int8::matmul_int8_serial(ch.h, rows, q, kernel, &mut r).is_ok());
        match &packed {
            _ if int8_done => {}
            Some(p) => p.matmul(rows, ch.h, &mut r),
            None => sgemm(rows, g, u, ch.h, false, w_rec, false, &mut r, false, false),
        }
        for j in 0..rows {
            let keep = ch.mask.is_none_or(|m| m[j * t + ti] != 0.0);
            let h = &mut ch.h[j * u..(j + 1) * u];
            if keep {
                let at = (j * t + ti) * g;
                let gates = match inp.embedded {
                    Some(e) => {
                        let id = ch.ids[j * t + ti] as usize * g;
                        looked_up.copy_from_slice(&e.table[id..id + g]);
                        &mut looked_up[..]
                    }
                    None => &mut ch.gates[at..at + g],
                };
                let pre = if KEEP { &mut ch.pre[at..at + g] } else { &mut [][..] };
                let rj = &r[j * g..(j + 1) * g];
                let su = (j * t + ti) * u..(j * t + ti + 1) * u;
                match spec.cell {
                    Cell::SimpleRnn => simple_step::<KEEP>(u, gates, pre, rj, h, &act),
                    Cell::Lstm => {
                        let cnew = if KEEP { &mut ch.cnew[su.clone()] } else { &mut [][..] };
                        let c = &mut ch.c[j * u..(j + 1) * u];
                        let tc = if spec.keep_tape {
                            &mut ch.tc[su]
                        } else {
                            &mut scratch[..]
                        };
                        lstm_step::<KEEP>(u, gates, pre, rj, h, c, cnew, tc, &act, &rec);
                    }
                    Cell::Gru => {
                        let rh = if spec.keep_tape {
                            &mut ch.rh[su]
                        } else {
                            &mut scratch[..]
                        };
                        gru_step::<KEEP>(u, gates, pre, rj, &b_rec, h, rh, &act, &rec)
                    }
                }
            }
            if spec.return_sequences {
                let dst = &mut ch.seq[(j * t + o) * u..(j * t + o + 1) * u];
                if keep || !spec.zero_masked_outputs {
                    dst.copy_from_slice(h);
                } else {
                    dst.fill(0.0);
                }
            }
        }
    }
}

// After the macros above: `macro_rules!` are visible only to modules declared below them.
mod backward;
pub use backward::rnn_backward;

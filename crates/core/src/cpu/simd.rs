//! One SIMD register of f32 lanes (AVX-512 or AVX2), with the few operations the hand-tiled
//! x86 kernels (direct convolution, small-batch GEMM) need. Kernels are written once, generic
//! over [`Lanes`], and instantiated inside `#[target_feature]` functions; every method is
//! `inline(always)` so it compiles to the single instruction of the caller's feature set.
//!
//! Every method is unsafe: the caller guarantees the CPU has the feature and that pointers
//! are valid for the lanes read or written.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

pub(crate) trait Lanes: Copy {
    const L: usize;
    unsafe fn zero() -> Self;
    unsafe fn load(p: *const f32) -> Self;
    /// Loads the first `n <= L` lanes, zeros in the rest.
    unsafe fn load_first(p: *const f32, n: usize) -> Self;
    unsafe fn splat(p: *const f32) -> Self;
    unsafe fn max(a: Self, b: Self) -> Self;
    /// Lane-wise maximum that is NaN wherever either input is (max pooling's rule; `max`
    /// returns `b` then).
    unsafe fn max_nan(a: Self, b: Self) -> Self;
    unsafe fn add(a: Self, b: Self) -> Self;
    unsafe fn sub(a: Self, b: Self) -> Self;
    /// `a * b + c`, fused.
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// Stores the first `n <= L` lanes.
    unsafe fn store_first(self, p: *mut f32, n: usize);
}

impl Lanes for __m512 {
    const L: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: see the module docs.
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: see the module docs.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> Self {
        // SAFETY: see the module docs; masked-off lanes are not read.
        unsafe { _mm512_maskz_loadu_ps(((1u32 << n) - 1) as u16, p) }
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> Self {
        // SAFETY: see the module docs.
        unsafe { _mm512_set1_ps(*p) }
    }
    #[inline(always)]
    unsafe fn max(a: Self, b: Self) -> Self {
        // SAFETY: see the module docs.
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn max_nan(a: Self, b: Self) -> Self {
        // SAFETY: see the module docs.
        unsafe {
            let unordered = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a, b);
            _mm512_mask_mov_ps(_mm512_max_ps(a, b), unordered, _mm512_set1_ps(f32::NAN))
        }
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        // SAFETY: see the module docs.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: Self, b: Self) -> Self {
        // SAFETY: see the module docs.
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
        // SAFETY: see the module docs.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: see the module docs.
        unsafe { _mm512_storeu_ps(p, self) }
    }
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, n: usize) {
        // SAFETY: see the module docs; masked-off lanes are not written.
        unsafe { _mm512_mask_storeu_ps(p, ((1u32 << n) - 1) as u16, self) }
    }
}

/// AVX2 lane masks: `MASKS[8 - n..16 - n]` has `n` leading all-ones lanes.
const MASKS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

#[inline(always)]
unsafe fn mask256(n: usize) -> __m256i {
    // SAFETY: `n <= 8`, so the 8 lanes read lie inside MASKS.
    unsafe { _mm256_loadu_si256(MASKS.as_ptr().add(8 - n) as *const __m256i) }
}

impl Lanes for __m256 {
    const L: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: see the module docs.
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: see the module docs.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> Self {
        // SAFETY: see the module docs; masked-off lanes are not read.
        unsafe { _mm256_maskload_ps(p, mask256(n)) }
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> Self {
        // SAFETY: see the module docs.
        unsafe { _mm256_set1_ps(*p) }
    }
    #[inline(always)]
    unsafe fn max(a: Self, b: Self) -> Self {
        // SAFETY: see the module docs.
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn max_nan(a: Self, b: Self) -> Self {
        // SAFETY: see the module docs.
        unsafe {
            let unordered = _mm256_cmp_ps::<_CMP_UNORD_Q>(a, b);
            _mm256_blendv_ps(_mm256_max_ps(a, b), _mm256_set1_ps(f32::NAN), unordered)
        }
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        // SAFETY: see the module docs.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: Self, b: Self) -> Self {
        // SAFETY: see the module docs.
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
        // SAFETY: see the module docs.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: see the module docs.
        unsafe { _mm256_storeu_ps(p, self) }
    }
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, n: usize) {
        // SAFETY: see the module docs; masked-off lanes are not written.
        unsafe { _mm256_maskstore_ps(p, mask256(n), self) }
    }
}

/// The widest f32 kernel set this CPU runs, `None` without AVX2 + FMA.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Isa {
    Avx512,
    Avx2,
}

pub(crate) fn isa() -> Option<Isa> {
    use std::sync::OnceLock;
    static ISA: OnceLock<Option<Isa>> = OnceLock::new();
    *ISA.get_or_init(|| {
        if std::env::var_os("CORTEX_NO_SIMD_KERNELS").is_some() {
            None
        } else if is_x86_feature_detected!("avx512f") {
            Some(Isa::Avx512)
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            Some(Isa::Avx2)
        } else {
            None
        }
    })
}

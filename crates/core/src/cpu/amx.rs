//! Intel AMX tiles: one instruction multiplies a 16 x 64-byte tile of activations by a tile of
//! 16 rows of 64-byte weight groups into 16 x 16 32-bit sums. `tdpbusd` (`u8 x i8 -> i32`,
//! 16,384 multiply-adds; a `vpdpbusd` does 64) serves int8 inference, `tdpbf16ps`
//! (`bf16 x bf16 -> f32`, 8,192) bf16 inference. Packed weight panels are already the B-tile
//! layout: each 64-byte row holds 16 columns of one group (4 `i8` or 2 `bf16` reduction values).
//!
//! Rust has no stable AMX intrinsics, so the tile instructions are inline assembly. Tile
//! registers are invisible to the compiler: every tile is loaded, used and stored inside this
//! module, and no Rust code runs on them in between.
//!
//! Linux hands out the tile state only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); without
//! it the first tile instruction is SIGILL. [`int8_available`] and [`bf16_available`] ask once per
//! process and report AMX only when the kernel granted it.

use std::arch::asm;
use std::sync::OnceLock;

/// Bytes of a tile row, and of a reduction step of one A-tile row.
pub(crate) const ROW_BYTES: usize = 64;
/// Rows per tile (of A and C), and packed weight groups per reduction step of a B tile.
pub(crate) const TILE_ROWS: usize = 16;
/// Bytes of one B tile: a panel's weights for one reduction step.
const B_TILE_BYTES: usize = TILE_ROWS * ROW_BYTES;
/// Weight panels (16 columns each) per pass: accumulators in tmm0-tmm3.
const PANELS: usize = 4;

/// The tile multiply a GEMM runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum TileOp {
    /// `tdpbusd`: `u8` activations, `i8` weights, `i32` sums.
    U8I8,
    /// `tdpbf16ps`: `bf16` activations and weights, `f32` sums.
    Bf16,
}

/// Whether this CPU has AMX-INT8 (and AVX-512 VNNI, which runs the rows AMX leaves) and the OS
/// granted this process the tile state. `CORTEX_NO_AMX` turns AMX off.
pub(crate) fn int8_available() -> bool {
    static GRANTED: OnceLock<bool> = OnceLock::new();
    // CPUID leaf 7: EDX bit 24 AMX-TILE, bit 25 AMX-INT8.
    *GRANTED.get_or_init(|| has_tiles(1 << 25) && std::arch::is_x86_feature_detected!("avx512vnni"))
}

/// Whether this CPU has AMX-BF16 and the OS granted this process the tile state.
pub(crate) fn bf16_available() -> bool {
    static GRANTED: OnceLock<bool> = OnceLock::new();
    // CPUID leaf 7: EDX bit 22 AMX-BF16.
    *GRANTED.get_or_init(|| has_tiles(1 << 22))
}

fn has_tiles(feature_bits: u32) -> bool {
    if std::env::var_os("CORTEX_NO_AMX").is_some() {
        return false;
    }
    let want = (1 << 24) | feature_bits;
    let leaf = std::arch::x86_64::__cpuid_count(7, 0);
    leaf.edx & want == want && tile_permission()
}

/// Asks Linux for the tile state once per process.
fn tile_permission() -> bool {
    static GRANTED: OnceLock<bool> = OnceLock::new();
    *GRANTED.get_or_init(request_tile_permission)
}

#[cfg(target_os = "linux")]
fn request_tile_permission() -> bool {
    const ARCH_GET_XCOMP_PERM: libc::c_long = 0x1022;
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these codes only reads/sets the process's permission bits.
    unsafe {
        if libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0 {
            return false;
        }
        let mut bits: u64 = 0;
        libc::syscall(libc::SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &mut bits as *mut u64) == 0
            && bits & (1 << XFEATURE_XTILEDATA) != 0
    }
}

#[cfg(not(target_os = "linux"))]
fn request_tile_permission() -> bool {
    false
}

/// The tile configuration: palette 1, tmm0-7 all 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn all_full() -> TileConfig {
        let mut c = [0u8; 64];
        c[0] = 1; // palette
        for t in 0..8 {
            c[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes()); // bytes per row
            c[48 + t] = TILE_ROWS as u8; // rows
        }
        TileConfig(c)
    }
}

/// Loads the B tile at `$b` (row stride `$stride`) into `$bt` and accumulates `tmm4 x $bt` into
/// `$acc` with `$op`'s instruction (asm templates must be literals, hence a macro).
macro_rules! tile_mul {
    ($op:expr, $acc:literal, $bt:literal, $b:expr, $stride:expr) => {
        match $op {
            TileOp::U8I8 => asm!(
                concat!("tileloadd ", $bt, ", [{b} + {s}*1]"),
                concat!("tdpbusd ", $acc, ", tmm4, ", $bt),
                b = in(reg) $b, s = in(reg) $stride, options(nostack, readonly)
            ),
            TileOp::Bf16 => asm!(
                concat!("tileloadd ", $bt, ", [{b} + {s}*1]"),
                concat!("tdpbf16ps ", $acc, ", tmm4, ", $bt),
                b = in(reg) $b, s = in(reg) $stride, options(nostack, readonly)
            ),
        }
    };
}

/// `c = a x w` for the first `m - m % 16` rows (the caller runs the rest some other way);
/// returns how many rows it did. `a` has `steps` reduction steps of 64 bytes per row, `w` is
/// `ldc / 16` panels of `steps` B tiles, `c` has `ldc` 32-bit sums per row.
///
/// # Safety
/// The CPU runs `op` ([`int8_available`] / [`bf16_available`] returned true); `a` holds `m`
/// rows of `lda >= steps * 64` bytes; `w` holds `ldc / 16` panels of `steps * 1024` bytes; `c`
/// holds `m` rows of `ldc` 4-byte values.
pub(crate) unsafe fn gemm_tiles(
    op: TileOp,
    a: *const u8,
    m: usize,
    lda: usize,
    w: *const u8,
    steps: usize,
    c: *mut u8,
    ldc: usize,
) -> usize {
    let rows = m - m % TILE_ROWS;
    if rows == 0 {
        return 0;
    }
    let config = TileConfig::all_full();
    let panels = ldc / TILE_ROWS;
    let panel_bytes = steps * B_TILE_BYTES;
    let (lda, ldc_bytes, wstride) = (lda as isize, (ldc * 4) as isize, ROW_BYTES as isize);
    // SAFETY: the caller's contract bounds every tile: an A tile is 16 rows of 64 bytes inside
    // `a` (row stride lda), a B tile 16 rows of 64 bytes inside a panel, a C tile 16 rows of 64
    // bytes inside `c` (row stride ldc * 4 bytes).
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
        let mut p = 0;
        while p < panels {
            let np = (panels - p).min(PANELS);
            let wp = w.add(p * panel_bytes);
            let mut i = 0;
            while i < rows {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                );
                for s in 0..steps {
                    let ap = a.offset(i as isize * lda + (s * ROW_BYTES) as isize);
                    asm!("tileloadd tmm4, [{a} + {lda}*1]", a = in(reg) ap, lda = in(reg) lda, options(nostack, readonly));
                    let bp = |q: usize| wp.add(q * panel_bytes + s * B_TILE_BYTES);
                    tile_mul!(op, "tmm0", "tmm5", bp(0), wstride);
                    if np > 1 {
                        tile_mul!(op, "tmm1", "tmm6", bp(1), wstride);
                    }
                    if np > 2 {
                        tile_mul!(op, "tmm2", "tmm7", bp(2), wstride);
                    }
                    if np > 3 {
                        tile_mul!(op, "tmm3", "tmm5", bp(3), wstride);
                    }
                }
                let cp = |q: usize| c.add((i * ldc + (p + q) * TILE_ROWS) * 4);
                asm!("tilestored [{c} + {s}*1], tmm0", c = in(reg) cp(0), s = in(reg) ldc_bytes, options(nostack));
                if np > 1 {
                    asm!("tilestored [{c} + {s}*1], tmm1", c = in(reg) cp(1), s = in(reg) ldc_bytes, options(nostack));
                }
                if np > 2 {
                    asm!("tilestored [{c} + {s}*1], tmm2", c = in(reg) cp(2), s = in(reg) ldc_bytes, options(nostack));
                }
                if np > 3 {
                    asm!("tilestored [{c} + {s}*1], tmm3", c = in(reg) cp(3), s = in(reg) ldc_bytes, options(nostack));
                }
                i += TILE_ROWS;
            }
            p += np;
        }
        asm!("tilerelease", options(nostack, nomem));
    }
    rows
}

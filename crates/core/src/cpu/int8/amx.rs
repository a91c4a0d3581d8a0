//! Intel AMX int8 tiles: `tdpbusd` multiplies a 16 x 64 tile of `u8` activations by a 64 x 16
//! tile of `i8` weights into 16 x 16 `i32` sums, 16,384 multiply-adds per instruction (a
//! `vpdpbusd` does 64). The packed weight panels are already the B-tile layout: each group of
//! 4 reduction values of 16 columns is one 64-byte tile row.
//!
//! Rust has no stable AMX intrinsics, so the tile instructions are inline assembly. Tile
//! registers are invisible to the compiler: every tile is loaded, used and stored inside this
//! module, and no Rust code runs on them in between.
//!
//! Linux hands out the tile state only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); without
//! it the first tile instruction is SIGILL. [`available`] asks once per process and reports
//! AMX only when the kernel granted it.

use std::arch::asm;
use std::sync::OnceLock;

use super::{KG, NR};

/// Reduction groups per tile step: 16 groups of 4 bytes fill a 64-byte A-tile row.
pub(super) const GROUPS_PER_STEP: usize = 16;
/// Rows per A tile.
const TILE_ROWS: usize = 16;
/// Weight panels (16 columns each) per pass: accumulators in tmm0-tmm3.
const PANELS: usize = 4;

/// Whether this CPU has AMX-INT8 and the OS granted this process the tile state.
pub(super) fn available() -> bool {
    static GRANTED: OnceLock<bool> = OnceLock::new();
    *GRANTED.get_or_init(|| {
        if std::env::var_os("CORTEX_NO_AMX").is_some() {
            return false;
        }
        // CPUID leaf 7: EDX bit 24 AMX-TILE, bit 25 AMX-INT8.
        let leaf = std::arch::x86_64::__cpuid_count(7, 0);
        if leaf.edx & (3 << 24) != 3 << 24 || !std::arch::is_x86_feature_detected!("avx512vnni") {
            return false;
        }
        request_tile_permission()
    })
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

/// `c = a x w` for the first `m - m % 16` rows (the caller runs the rest on another kernel);
/// returns how many rows it did.
///
/// # Safety
/// [`available`] returned true; `a` holds `m` rows of `lda = groups * KG` bytes with `groups` a
/// multiple of [`GROUPS_PER_STEP`]; `w` holds `ldc / NR` panels of `groups` groups; `c` holds
/// `m` rows of `ldc` values.
pub(super) unsafe fn gemm_amx(
    a: *const u8,
    m: usize,
    lda: usize,
    w: *const i8,
    groups: usize,
    c: *mut i32,
    ldc: usize,
) -> usize {
    let rows = m - m % TILE_ROWS;
    if rows == 0 {
        return 0;
    }
    let config = TileConfig::all_full();
    let panels = ldc / NR;
    let panel_bytes = groups * NR * KG;
    let steps = groups / GROUPS_PER_STEP;
    let (lda, ldc_bytes, wstride) = (lda as isize, (ldc * 4) as isize, (NR * KG) as isize);
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
                    let ap = a.offset(i as isize * lda + (s * GROUPS_PER_STEP * KG) as isize);
                    asm!("tileloadd tmm4, [{a} + {lda}*1]", a = in(reg) ap, lda = in(reg) lda, options(nostack, readonly));
                    let bp = |q: usize| wp.add(q * panel_bytes + s * GROUPS_PER_STEP * NR * KG);
                    asm!("tileloadd tmm5, [{b} + {s}*1]", "tdpbusd tmm0, tmm4, tmm5",
                        b = in(reg) bp(0), s = in(reg) wstride, options(nostack, readonly));
                    if np > 1 {
                        asm!("tileloadd tmm6, [{b} + {s}*1]", "tdpbusd tmm1, tmm4, tmm6",
                            b = in(reg) bp(1), s = in(reg) wstride, options(nostack, readonly));
                    }
                    if np > 2 {
                        asm!("tileloadd tmm7, [{b} + {s}*1]", "tdpbusd tmm2, tmm4, tmm7",
                            b = in(reg) bp(2), s = in(reg) wstride, options(nostack, readonly));
                    }
                    if np > 3 {
                        asm!("tileloadd tmm5, [{b} + {s}*1]", "tdpbusd tmm3, tmm4, tmm5",
                            b = in(reg) bp(3), s = in(reg) wstride, options(nostack, readonly));
                    }
                }
                let cp = |q: usize| c.add(i * ldc + (p + q) * NR);
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

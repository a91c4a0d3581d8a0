// Workgroup-wide reductions, portable path: a tree in workgroup memory, log2(WG) barriers.
// The including shader declares `const WG: u32` (a power of two: its workgroup size) and calls
// these with an entry point's `WgIds`, from control flow that is uniform across the workgroup.
// wg_reduce_subgroup.wgsl has the same interface on subgroup operations; source.rs registers
// each reducing shader once per path, and the kernels take the subgroup one where the device
// has SUBGROUP.

struct WgIds {
    @builtin(local_invocation_index) lid: u32,
}

var<workgroup> wg_red: array<vec2<f32>, WG>;

// Sum of `v` over the workgroup (every thread gets the result).
fn wg_sum2(ids: WgIds, v: vec2<f32>) -> vec2<f32> {
    wg_red[ids.lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (ids.lid < s) {
            wg_red[ids.lid] += wg_red[ids.lid + s];
        }
        workgroupBarrier();
    }
    let r = wg_red[0];
    workgroupBarrier();
    return r;
}

fn wg_sum(ids: WgIds, v: f32) -> f32 {
    return wg_sum2(ids, vec2<f32>(v, 0.0)).x;
}

// Maximum of `v` over the workgroup (every thread gets the result).
fn wg_max(ids: WgIds, v: f32) -> f32 {
    wg_red[ids.lid].x = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (ids.lid < s) {
            wg_red[ids.lid].x = max(wg_red[ids.lid].x, wg_red[ids.lid + s].x);
        }
        workgroupBarrier();
    }
    let r = wg_red[0].x;
    workgroupBarrier();
    return r;
}

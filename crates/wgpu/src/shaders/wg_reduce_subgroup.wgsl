// Workgroup-wide reductions on subgroup operations (device feature SUBGROUP): each subgroup
// reduces in registers, its first lane parks the result in workgroup memory, and every thread
// folds the (at most WG / 4) subgroup results: 2 barriers instead of log2(WG), and no
// workgroup-memory traffic inside a subgroup. Same interface as wg_reduce_tree.wgsl (see its
// header); the subgroup size is whatever the device picks.

struct WgIds {
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) sg_count: u32,
    @builtin(subgroup_invocation_id) lane: u32,
}

// One slot per subgroup; WG slots cover even one-lane subgroups.
var<workgroup> wg_red: array<vec2<f32>, WG>;

// Sum of `v` over the workgroup (every thread gets the result).
fn wg_sum2(ids: WgIds, v: vec2<f32>) -> vec2<f32> {
    let s = subgroupAdd(v);
    if (ids.lane == 0u) {
        wg_red[ids.sg] = s;
    }
    workgroupBarrier();
    var t = wg_red[0];
    for (var i = 1u; i < ids.sg_count; i++) {
        t += wg_red[i];
    }
    workgroupBarrier();
    return t;
}

fn wg_sum(ids: WgIds, v: f32) -> f32 {
    return wg_sum2(ids, vec2<f32>(v, 0.0)).x;
}

// Maximum of `v` over the workgroup (every thread gets the result).
fn wg_max(ids: WgIds, v: f32) -> f32 {
    let s = subgroupMax(v);
    if (ids.lane == 0u) {
        wg_red[ids.sg].x = s;
    }
    workgroupBarrier();
    var t = wg_red[0].x;
    for (var i = 1u; i < ids.sg_count; i++) {
        t = max(t, wg_red[i].x);
    }
    workgroupBarrier();
    return t;
}

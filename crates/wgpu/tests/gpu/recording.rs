//! `Gpu::record`: one submission for many kernel calls, results still exact, and no buffer
//! reuse hazard between collected commands and later uploads.

use super::common::{gpu, rand_vec};
use cortex_wgpu::recording::chunk_limit;

#[test]
fn a_recorded_scope_submits_once_and_downloads_see_earlier_work() {
    let Some(g) = gpu() else { return };
    let x = rand_vec(1000, 3);
    let gx = g.upload(&x, &[1000]).unwrap();
    // Other tests share this device from other threads, so only this thread's scope is
    // counted: the counter moves by at least our submissions, and by exactly one per flush
    // when nothing else runs; compare against the unrecorded path on the same work instead.
    let run = |recorded: bool| {
        let _scope = recorded.then(|| g.record());
        let mut y = gx.clone();
        for _ in 0..20 {
            y = g.scale(&y, 1.0, 0.5).unwrap();
        }
        // A download inside the scope submits what came before it first.
        g.download(&y).unwrap()
    };
    let plain = run(false);
    let recorded = run(true);
    for (i, (&a, &b)) in plain.iter().zip(&recorded).enumerate() {
        assert_eq!(a, b, "element {i}");
        assert!((a - (x[i] + 10.0)).abs() < 1e-4, "element {i}: {a}");
    }
}

#[test]
fn collected_commands_cut_submissions() {
    // A private device, so no other test's submissions are counted.
    let Some(_) = gpu() else { return };
    let g = cortex_wgpu::Gpu::new().unwrap();
    let t = g.upload(&[1.0; 64], &[64]).unwrap();
    let count = |recorded: bool| {
        let before = g.submissions();
        {
            let _scope = recorded.then(|| g.record());
            for _ in 0..12 {
                drop(g.scale(&t, 2.0, 0.0).unwrap());
            }
            let _nested = g.record();
            drop(g.scale(&t, 2.0, 0.0).unwrap());
        }
        g.submissions() - before
    };
    assert_eq!(count(false), 13);
    assert!(g.record_chunk() >= 1);
    // Chunks ramp up 1, 2, 4, .. to record_chunk: 13 calls at chunk 8 are 1 + 2 + 4 + 6.
    let mut expected = 13;
    if g.recording_enabled() {
        let (mut left, mut flushes) = (13usize, 0u32);
        expected = 0;
        while left > 0 {
            left -= chunk_limit(flushes, g.record_chunk()).min(left);
            flushes += 1;
            expected += 1;
        }
    }
    assert_eq!(count(true), expected);
}

#[test]
fn submission_chunks_ramp_up_to_the_limit() {
    let limits: Vec<usize> = (0..6).map(|f| chunk_limit(f, 8)).collect();
    assert_eq!(limits, [1, 2, 4, 8, 8, 8]);
    assert_eq!(chunk_limit(40, 1000), 1000);
    assert_eq!(chunk_limit(3, 0), 1, "a zero limit still submits every call");
}

#[test]
fn buffers_freed_inside_a_scope_are_not_reused_before_it_is_submitted() {
    let Some(_) = gpu() else { return };
    let g = cortex_wgpu::Gpu::new().unwrap();
    let a = rand_vec(4096, 11);
    let b = rand_vec(4096, 12);
    let y = {
        let _scope = g.record();
        let ta = g.upload(&a, &[4096]).unwrap();
        let y = g.scale(&ta, 2.0, 0.0).unwrap();
        // `ta`'s buffer is still read by the unsubmitted scale. Were it back in the pool,
        // this upload (applied at the start of the next submission) would take it and the
        // scale would read `b`.
        drop(ta);
        let tb = g.upload(&b, &[4096]).unwrap();
        let z = g.scale(&tb, 3.0, 0.0).unwrap();
        let zs = g.download(&z).unwrap();
        for (i, (&got, &want)) in zs.iter().zip(&b).enumerate() {
            assert_eq!(got, 3.0 * want, "z element {i}");
        }
        y
    };
    let ys = g.download(&y).unwrap();
    for (i, (&got, &want)) in ys.iter().zip(&a).enumerate() {
        assert_eq!(got, 2.0 * want, "y element {i}");
    }
}

#[test]
fn another_devices_scope_does_not_capture_this_ones_work() {
    let Some(shared) = gpu() else { return };
    let other = cortex_wgpu::Gpu::new().unwrap();
    let _scope = other.record();
    let t = shared.upload(&[1.0, 2.0], &[2]).unwrap();
    let before = shared.submissions();
    let y = shared.scale(&t, 4.0, 0.0).unwrap();
    assert!(shared.submissions() > before, "the shared device must submit directly");
    assert_eq!(shared.download(&y).unwrap(), vec![4.0, 8.0]);
    let inner = shared.record();
    drop(inner);
    let u = other.upload(&[3.0], &[1]).unwrap();
    assert_eq!(other.download(&other.scale(&u, 2.0, 0.0).unwrap()).unwrap(), vec![6.0]);
}

//! Concatenation, slicing and time reversal against plain host loops.

use super::common::{gpu, rand_vec};

#[test]
fn concat_then_slice_round_trips() {
    let Some(g) = gpu() else { return };
    let widths = [3usize, 1, 6];
    let rows = 2 * 5;
    let parts: Vec<Vec<f32>> = widths.iter().map(|&w| rand_vec(rows * w, w as u64)).collect();
    let gparts: Vec<_> = parts
        .iter()
        .zip(widths)
        .map(|(v, w)| g.upload(v, &[2, 5, w]).unwrap())
        .collect();
    let refs: Vec<_> = gparts.iter().collect();
    let cat = g.concat_last(&refs).unwrap();
    assert_eq!(cat.shape(), &[2, 5, 10]);
    let got = g.download(&cat).unwrap();
    let mut want = Vec::new();
    for r in 0..rows {
        for (v, w) in parts.iter().zip(widths) {
            want.extend_from_slice(&v[r * w..(r + 1) * w]);
        }
    }
    assert_eq!(got, want);
    let mut start = 0;
    for (v, w) in parts.iter().zip(widths) {
        let back = g.slice_last(&cat, start, w).unwrap();
        assert_eq!(back.shape(), &[2, 5, w]);
        assert_eq!(&g.download(&back).unwrap(), v, "part at column {start}");
        start += w;
    }
}

#[test]
fn reverse_time_reverses_only_the_time_axis() {
    let Some(g) = gpu() else { return };
    let (b, t, f) = (3, 7, 4);
    let x = rand_vec(b * t * f, 9);
    let gx = g.upload(&x, &[b, t, f]).unwrap();
    let got = g.download(&g.reverse_time(&gx).unwrap()).unwrap();
    for bi in 0..b {
        for ti in 0..t {
            for fi in 0..f {
                assert_eq!(got[(bi * t + ti) * f + fi], x[(bi * t + t - 1 - ti) * f + fi]);
            }
        }
    }
    // Twice is the identity.
    let twice = g.reverse_time(&g.reverse_time(&gx).unwrap()).unwrap();
    assert_eq!(g.download(&twice).unwrap(), x);
}

#[test]
fn swap_axes12_moves_heads_ahead_of_steps_and_back() {
    let Some(g) = gpu() else { return };
    let (b, t, h, d) = (2, 5, 3, 4);
    let x = rand_vec(b * t * h * d, 11);
    let gx = g.upload(&x, &[b, t, h, d]).unwrap();
    let swapped = g.swap_axes12(&gx).unwrap();
    assert_eq!(swapped.shape(), &[b, h, t, d]);
    let got = g.download(&swapped).unwrap();
    for bi in 0..b {
        for ti in 0..t {
            for hi in 0..h {
                for di in 0..d {
                    assert_eq!(
                        got[((bi * h + hi) * t + ti) * d + di],
                        x[((bi * t + ti) * h + hi) * d + di]
                    );
                }
            }
        }
    }
    // Swapping back restores the input.
    assert_eq!(g.download(&g.swap_axes12(&swapped).unwrap()).unwrap(), x);
}

#[test]
fn layout_shape_errors_say_what_was_expected() {
    let Some(g) = gpu() else { return };
    let a = g.upload(&[0.0; 6], &[2, 3]).unwrap();
    let b = g.upload(&[0.0; 6], &[3, 2]).unwrap();
    let err = g.concat_last(&[&a, &b]).unwrap_err().to_string();
    assert!(err.contains("leading axes [2]") && err.contains("[3, 2]"), "{err}");
    assert!(g.concat_last(&[]).is_err());
    let err = g.slice_last(&a, 2, 2).unwrap_err().to_string();
    assert!(err.contains("2..4") && err.contains("[2, 3]"), "{err}");
    let err = g.reverse_time(&a).unwrap_err().to_string();
    assert!(err.contains("[batch, time, features]"), "{err}");
    let err = g.swap_axes12(&a).unwrap_err().to_string();
    assert!(err.contains("rank-4") && err.contains("[2, 3]"), "{err}");
}

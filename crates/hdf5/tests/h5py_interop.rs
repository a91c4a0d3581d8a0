//! Files from our writer, read back by h5py (libhdf5) and Keras. Skipped, with a notice, when
//! python3 with h5py (or keras) is not installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use cortex_hdf5::{write, Attr, Dataset, Dtype, Group, Node};

fn python_has(module: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .env("KERAS_BACKEND", "jax")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        println!("SKIPPED: python3 cannot import {module}");
    }
    ok
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cortex-hdf5-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn run_python(script: &str, path: &Path) {
    let out = Command::new("python3")
        .args(["-c", script, path.to_str().unwrap()])
        .env("KERAS_BACKEND", "jax")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn h5py_reads_our_files() {
    if !python_has("h5py") {
        return;
    }
    let mut root = Group::default();
    root.attrs.push(("title".into(), Attr::String("wëights".into())));
    root.attrs.push(("ints".into(), Attr::I64(vec![1, -2])));
    root.attrs.push(("f".into(), Attr::F64(vec![0.5])));
    let v: Vec<f32> = (0..6).map(|x| x as f32 / 4.0).collect();
    let vars = root.group_mut_or_create("layers/dense/vars");
    vars.attrs.push(("name".into(), Attr::String("dense".into())));
    vars.insert("0", Node::Dataset(Dataset::from_f32(vec![2, 3], &v)));
    root.insert("scalar", Node::Dataset(Dataset::from_i64(vec![], &[-7])));
    root.insert("empty", Node::Dataset(Dataset::from_f32(vec![0, 2], &[])));
    let h: Vec<u8> = [0x3c00u16, 0xc000].iter().flat_map(|x| x.to_le_bytes()).collect();
    root.insert(
        "half",
        Node::Dataset(Dataset {
            shape: vec![2],
            dtype: Dtype::F16,
            data: h,
        }),
    );
    root.insert(
        "u16",
        Node::Dataset(Dataset {
            shape: vec![2],
            dtype: Dtype::U16,
            data: vec![1, 0, 0xff, 0xff],
        }),
    );
    root.insert(
        "flags",
        Node::Dataset(Dataset {
            shape: vec![3],
            dtype: Dtype::Bool,
            data: vec![1, 0, 1],
        }),
    );
    root.insert(
        "f64",
        Node::Dataset(Dataset {
            shape: vec![1, 1, 1],
            dtype: Dtype::F64,
            data: 2.5f64.to_le_bytes().to_vec(),
        }),
    );
    // 30 compact links in one group: libhdf5 must accept more than its default 8.
    for i in 0..30 {
        root.group_mut_or_create("many")
            .insert(&format!("m{i:02}"), Node::Dataset(Dataset::from_i64(vec![1], &[i])));
    }
    root.group_mut_or_create("deep/er/and/deeper");
    let path = temp_file("interop.h5", &write(&root).unwrap());
    let script = r#"
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:
    a = f.attrs
    assert a["title"] in ("wëights", "wëights".encode()), a["title"]
    assert list(a["ints"]) == [1, -2] and list(a["f"]) == [0.5], (a["ints"], a["f"])
    assert f["layers/dense/vars"].attrs["name"] in ("dense", b"dense")
    d = f["layers/dense/vars/0"]
    assert d.dtype == np.float32 and d.shape == (2, 3)
    assert (d[()] == np.arange(6, dtype="f4").reshape(2, 3) / 4).all()
    s = f["scalar"]
    assert s.shape == () and s.dtype == np.int64 and s[()] == -7
    assert f["empty"].shape == (0, 2) and f["empty"][()].size == 0
    assert f["half"].dtype == np.float16 and list(f["half"][()]) == [1.0, -2.0]
    assert list(f["u16"][()]) == [1, 65535]
    assert f["flags"].dtype == np.bool_ and list(f["flags"][()]) == [True, False, True]
    assert f["f64"][()].item() == 2.5
    assert list(f["many"].keys()) == ["m%02d" % i for i in range(30)]
    assert all(f["many/m%02d" % i][0] == i for i in range(30))
    assert isinstance(f["deep/er/and/deeper"], h5py.Group)
print("ok")
"#;
    run_python(script, &path);
}

#[test]
fn keras_loads_our_weights() {
    if !python_has("h5py") || !python_has("keras") {
        return;
    }
    let mut root = Group::default();
    let k: Vec<f32> = (0..6).map(|x| x as f32 * 0.25 - 0.5).collect();
    let vars = root.group_mut_or_create("layers/dense/vars");
    vars.attrs.push(("name".into(), Attr::String("dense".into())));
    vars.insert("0", Node::Dataset(Dataset::from_f32(vec![3, 2], &k)));
    vars.insert("1", Node::Dataset(Dataset::from_f32(vec![2], &[1.5, -2.0])));
    root.group_mut_or_create("vars")
        .attrs
        .push(("name".into(), Attr::String("sequential".into())));
    let path = temp_file("model.weights.h5", &write(&root).unwrap());
    let script = r#"
import sys, numpy as np, keras
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
model.load_weights(sys.argv[1])
k, b = model.layers[0].get_weights()
assert (k == np.arange(6, dtype="f4").reshape(3, 2) * 0.25 - 0.5).all(), k
assert (b == np.array([1.5, -2.0], "f4")).all(), b
print("ok")
"#;
    run_python(script, &path);
}

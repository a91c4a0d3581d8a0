//! Reads the h5py/Keras fixtures and checks structure and exact values against the sidecars.

mod common;

use common::*;
use cortex_hdf5::{read, Attr, Dtype, Limits, Node};

#[test]
fn every_fixture_matches_its_sidecar() {
    for name in FIXTURES {
        let root = read(&fixture(name), &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_matches_sidecar(name, &root);
    }
}

#[test]
fn keras_dense_weights() {
    let root = read(&fixture("keras_dense.weights"), &Limits::default()).unwrap();
    let k = root.dataset("layers/dense/vars/0").unwrap();
    assert_eq!((k.shape.clone(), k.dtype), (vec![3, 4], Dtype::F32));
    assert_eq!(k.to_f32().unwrap().len(), 12);
    // The optimizer's iteration counter is an int32 scalar.
    let it = root.dataset("optimizer/vars/0").unwrap();
    assert_eq!((it.shape.clone(), it.dtype, it.len()), (vec![], Dtype::I32, 1));
    assert_eq!(it.to_f32().unwrap(), vec![1.0]);
    assert_eq!(
        root.group("layers/dense/vars").unwrap().attr("name"),
        Some(&Attr::String("dense".into()))
    );
    assert!(root.get("layers/dense/vars/0/x").is_none());
    assert!(root.group("layers/dense/vars/0").is_none());
    let names: Vec<&str> = root.members.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["layers", "optimizer", "vars"]);
}

#[test]
fn default_file_details() {
    let root = read(&fixture("h5py_default"), &Limits::default()).unwrap();
    assert_eq!(root.attr("vlen_str"), Some(&Attr::String("hello, world".into())));
    assert_eq!(root.attr("fixed_str"), Some(&Attr::String("fixed".into())));
    assert_eq!(root.attr("int_vec"), Some(&Attr::I64(vec![1, -2, 3])));
    assert_eq!(root.attr("f_scalar"), Some(&Attr::F64(vec![2.5])));
    let gz = root.dataset("gz").unwrap();
    let want: Vec<f32> = (0..70).map(|i| (i as f32 - 30.0) / 8.0).collect();
    assert_eq!(gz.to_f32().unwrap(), want);
    let be = root.dataset("be_i4").unwrap();
    assert_eq!(be.dtype, Dtype::I32);
    assert_eq!(be.to_f32().unwrap(), vec![-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0]);
    assert_eq!(root.dataset("empty").unwrap().shape, vec![0, 3]);
    assert!(root.dataset("empty").unwrap().is_empty());
    assert_eq!(
        root.dataset("compact").unwrap().to_f32().unwrap(),
        vec![1.0, 2.0, 3.0, 4.0]
    );
    let many = root.group("many").unwrap();
    assert_eq!(many.members.len(), 12);
    assert_eq!(
        root.group("a/b/c").unwrap().attr("name"),
        Some(&Attr::String("deep".into()))
    );
}

#[test]
fn latest_file_details() {
    let root = read(&fixture("h5py_latest"), &Limits::default()).unwrap();
    let many = root.group("many").unwrap();
    let names: Vec<String> = many.members.iter().map(|(n, _)| n.clone()).collect();
    let want: Vec<String> = (0..30).map(|i| format!("d{i:02}")).collect();
    assert_eq!(names, want, "dense group members in name order");
    // A group created with track_order=True lists members in creation order.
    let ordered: Vec<&str> = root
        .group("ordered")
        .unwrap()
        .members
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(ordered, ["zeta", "alpha", "mid"]);
    let want: Vec<f32> = (0..60).map(|i| i as f32 / 2.0).collect();
    for name in ["single_chunk", "fixed_array", "btree2", "ext_array_gz"] {
        assert_eq!(root.dataset(name).unwrap().to_f32().unwrap(), want, "{name}");
    }
    let ext = root.dataset("ext_array").unwrap();
    let want: Vec<f32> = (0..320).map(|i| i as f32).collect();
    assert_eq!((ext.shape.clone(), ext.to_f32().unwrap()), (vec![20, 16], want));
    assert_eq!(
        root.dataset("partial").unwrap().to_f32().unwrap(),
        [1.0, 2.0, -1.5, -1.5, -1.5, -1.5]
    );
    assert_eq!(root.group("manyattrs").unwrap().attrs.len(), 12);
    assert!(matches!(root.get("scalar"), Some(Node::Dataset(d)) if d.shape.is_empty()));
}

#[test]
fn unsupported_filter_is_a_clear_error() {
    let e = read(&fixture("unsupported_lzf"), &Limits::default()).unwrap_err();
    assert!(e.to_string().contains("filter 32000 is not supported"), "{e}");
    assert!(e.to_string().contains("/lzf"), "{e}");
}

#[test]
fn a_group_containing_itself_is_an_error() {
    // Our writer's file, with the link "loop" pointed back at the root group's own header.
    let mut root = cortex_hdf5::Group::default();
    root.insert("loop", Node::Group(cortex_hdf5::Group::default()));
    let mut bytes = cortex_hdf5::write(&root).unwrap();
    let root_addr = u64::from_le_bytes(bytes[36..44].try_into().unwrap());
    let at = bytes.windows(4).position(|w| w == b"loop").unwrap() + 4;
    bytes[at..at + 8].copy_from_slice(&root_addr.to_le_bytes());
    // Re-checksum the root object header (the last structure in the file).
    let end = bytes.len() - 4;
    let sum = lookup3(&bytes[root_addr as usize..end]);
    bytes[end..].copy_from_slice(&sum.to_le_bytes());
    let e = read(&bytes, &Limits::default()).unwrap_err();
    assert!(e.to_string().contains("cycle"), "{e}");
}

/// Jenkins lookup3 (hashlittle, seed 0), re-implemented here to patch test files.
fn lookup3(data: &[u8]) -> u32 {
    let init = 0xdead_beef_u32.wrapping_add(data.len() as u32);
    let (mut a, mut b, mut c) = (init, init, init);
    let word = |s: &[u8]| {
        s.iter()
            .enumerate()
            .fold(0u32, |w, (i, &x)| w | (u32::from(x) << (8 * i)))
    };
    let mut rest = data;
    while rest.len() > 12 {
        a = a.wrapping_add(word(&rest[0..4]));
        b = b.wrapping_add(word(&rest[4..8]));
        c = c.wrapping_add(word(&rest[8..12]));
        a = a.wrapping_sub(c) ^ c.rotate_left(4);
        c = c.wrapping_add(b);
        b = b.wrapping_sub(a) ^ a.rotate_left(6);
        a = a.wrapping_add(c);
        c = c.wrapping_sub(b) ^ b.rotate_left(8);
        b = b.wrapping_add(a);
        a = a.wrapping_sub(c) ^ c.rotate_left(16);
        c = c.wrapping_add(b);
        b = b.wrapping_sub(a) ^ a.rotate_left(19);
        a = a.wrapping_add(c);
        c = c.wrapping_sub(b) ^ b.rotate_left(4);
        b = b.wrapping_add(a);
        rest = &rest[12..];
    }
    if rest.is_empty() {
        return c;
    }
    let mut tail = [0u8; 12];
    tail[..rest.len()].copy_from_slice(rest);
    a = a.wrapping_add(word(&tail[0..4]));
    b = b.wrapping_add(word(&tail[4..8]));
    c = c.wrapping_add(word(&tail[8..12]));
    c = (c ^ b).wrapping_sub(b.rotate_left(14));
    a = (a ^ c).wrapping_sub(c.rotate_left(11));
    b = (b ^ a).wrapping_sub(a.rotate_left(25));
    c = (c ^ b).wrapping_sub(b.rotate_left(16));
    a = (a ^ c).wrapping_sub(c.rotate_left(4));
    b = (b ^ a).wrapping_sub(a.rotate_left(14));
    (c ^ b).wrapping_sub(b.rotate_left(24))
}

#[test]
fn limits_are_enforced() {
    let bytes = fixture("keras_functional.weights");
    let tight = |max_bytes, max_objects, max_depth| Limits {
        max_bytes,
        max_objects,
        max_depth,
    };
    let e = read(&bytes, &tight(100, 1_000_000, 64)).unwrap_err();
    assert!(e.to_string().contains("max_bytes"), "{e}");
    let e = read(&bytes, &tight(1 << 30, 10, 64)).unwrap_err();
    assert!(e.to_string().contains("max_objects"), "{e}");
    let e = read(&bytes, &tight(1 << 30, 1_000_000, 2)).unwrap_err();
    assert!(e.to_string().contains("max_depth"), "{e}");
}

#[test]
fn garbage_is_an_error() {
    assert!(read(b"", &Limits::default()).is_err());
    assert!(read(b"not an hdf5 file at all", &Limits::default()).is_err());
    let mut truncated = fixture("keras_dense.weights");
    truncated.truncate(600);
    assert!(read(&truncated, &Limits::default()).is_err());
}

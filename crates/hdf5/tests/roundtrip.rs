//! Writer round trips: write with our writer, read back with our reader, compare.

mod common;

use common::*;
use cortex_hdf5::{read, write, Attr, Dataset, Dtype, Group, Limits, Node};

fn every_dtype() -> Group {
    let mut root = Group::default();
    root.attrs.push(("count".into(), Attr::I64(vec![3, -4])));
    root.attrs.push(("empty".into(), Attr::String(String::new())));
    root.attrs.push(("ratio".into(), Attr::F64(vec![0.25])));
    root.attrs.push(("title".into(), Attr::String("wëights ✓".into())));
    for (i, dtype) in [
        Dtype::F16,
        Dtype::F32,
        Dtype::F64,
        Dtype::I8,
        Dtype::I16,
        Dtype::I32,
        Dtype::I64,
        Dtype::U8,
        Dtype::U16,
        Dtype::U32,
        Dtype::U64,
        Dtype::Bool,
    ]
    .into_iter()
    .enumerate()
    {
        let data: Vec<u8> = (0..6 * dtype.size())
            .map(|b| {
                if dtype == Dtype::Bool {
                    (b % 2) as u8
                } else {
                    (b * 7 + i) as u8
                }
            })
            .collect();
        root.group_mut_or_create("types").insert(
            &format!("{dtype:?}"),
            Node::Dataset(Dataset {
                shape: vec![2, 3],
                dtype,
                data,
            }),
        );
    }
    root.insert("scalar", Node::Dataset(Dataset::from_i64(vec![], &[42])));
    root.insert("empty", Node::Dataset(Dataset::from_f32(vec![0, 4], &[])));
    let v: Vec<f32> = (0..24).map(|x| x as f32 * 0.5 - 3.0).collect();
    root.group_mut_or_create("a/b/c/d")
        .insert("rank4", Node::Dataset(Dataset::from_f32(vec![2, 3, 2, 2], &v)));
    root.group_mut_or_create("a/b")
        .attrs
        .push(("name".into(), Attr::String("b".into())));
    for i in 0..30 {
        root.group_mut_or_create("many")
            .insert(&format!("m{i:02}"), Node::Dataset(Dataset::from_i64(vec![1], &[i])));
    }
    root.group_mut_or_create("empty_group");
    root
}

#[test]
fn write_then_read_is_identity() {
    let root = every_dtype();
    let bytes = write(&root).unwrap();
    let back = read(&bytes, &Limits::default()).unwrap();
    assert_eq!(back, sorted(&root));
    // Deterministic: same input, same bytes.
    assert_eq!(write(&root).unwrap(), bytes);
}

#[test]
fn fixtures_survive_a_rewrite() {
    for name in FIXTURES {
        let first = read(&fixture(name), &Limits::default()).unwrap();
        let bytes = write(&first).unwrap();
        let second = read(&bytes, &Limits::default()).unwrap();
        assert_eq!(sorted(&second), sorted(&first), "{name}");
        assert_matches_sidecar(name, &second);
    }
}

#[test]
fn writer_rejects_bad_input() {
    let mut g = Group::default();
    g.insert("bad/name", Node::Group(Group::default()));
    assert!(write(&g).is_err());
    let mut g = Group::default();
    g.insert(
        "short",
        Node::Dataset(Dataset {
            shape: vec![3],
            dtype: Dtype::F32,
            data: vec![0; 8],
        }),
    );
    assert!(write(&g).unwrap_err().to_string().contains("/short"));
    let mut g = Group::default();
    g.members.push(("x".into(), Node::Group(Group::default())));
    g.members.push(("x".into(), Node::Group(Group::default())));
    assert!(write(&g).is_err());
}

#[test]
fn group_helpers() {
    let mut root = Group::default();
    root.group_mut_or_create("layers/dense/vars")
        .insert("0", Node::Dataset(Dataset::from_f32(vec![2], &[1.0, 2.0])));
    assert_eq!(
        root.dataset("layers/dense/vars/0").unwrap().to_f32().unwrap(),
        vec![1.0, 2.0]
    );
    assert_eq!(root.dataset("/layers//dense/vars/0/").unwrap().len(), 2);
    assert!(root.group("").is_some());
    assert!(root.dataset("layers").is_none());
    root.group_mut_or_create("layers/dense/vars")
        .insert("0", Node::Dataset(Dataset::from_i64(vec![], &[5])));
    assert_eq!(root.dataset("layers/dense/vars/0").unwrap().dtype, Dtype::I64);
    assert_eq!(root.group("layers/dense/vars").unwrap().members.len(), 1);
}

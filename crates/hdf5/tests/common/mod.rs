//! Shared test helpers: loading the gzip-compressed fixtures and comparing a read tree with the
//! fixture's `.expected.txt` sidecar (written by h5py in make_fixtures.py).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use cortex_hdf5::{Attr, Dataset, Dtype, Group, Node};

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The decompressed bytes of fixture `name` (e.g. "h5py_default").
pub fn fixture(name: &str) -> Vec<u8> {
    let gz = std::fs::read(fixture_dir().join(format!("{name}.h5.gz"))).expect("fixture exists");
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut out)
        .expect("fixture is gzip");
    out
}

pub const FIXTURES: [&str; 4] = [
    "h5py_default",
    "h5py_latest",
    "keras_dense.weights",
    "keras_functional.weights",
];

pub fn dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::F16 => "f16",
        Dtype::F32 => "f32",
        Dtype::F64 => "f64",
        Dtype::I8 => "i8",
        Dtype::I16 => "i16",
        Dtype::I32 => "i32",
        Dtype::I64 => "i64",
        Dtype::U8 => "u8",
        Dtype::U16 => "u16",
        Dtype::U32 => "u32",
        Dtype::U64 => "u64",
        Dtype::Bool => "bool",
    }
}

/// Integer elements of a dataset, widened to i128 so u64 and i64 both fit.
pub fn ints(d: &Dataset) -> Vec<i128> {
    d.data
        .chunks_exact(d.dtype.size())
        .map(|b| {
            let mut w = [0u8; 8];
            w[..b.len()].copy_from_slice(b);
            let u = u64::from_le_bytes(w);
            match d.dtype {
                Dtype::I8 => i128::from(u as u8 as i8),
                Dtype::I16 => i128::from(u as u16 as i16),
                Dtype::I32 => i128::from(u as u32 as i32),
                Dtype::I64 => i128::from(u as i64),
                _ => i128::from(u),
            }
        })
        .collect()
}

/// Every group, dataset and attribute under `g`, keyed like the sidecar lines.
pub fn flatten(g: &Group, prefix: &str, out: &mut BTreeMap<String, String>) {
    for (name, a) in &g.attrs {
        let v = match a {
            Attr::String(s) => format!("S\t{s}"),
            Attr::F64(v) => format!(
                "F\t{}",
                v.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>().join(" ")
            ),
            Attr::I64(v) => format!("I\t{}", v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" ")),
        };
        out.insert(format!("A\t{prefix}\t{name}"), v);
    }
    for (name, node) in &g.members {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        match node {
            Node::Group(sub) => {
                out.insert(format!("G\t{path}"), String::new());
                flatten(sub, &path, out);
            }
            Node::Dataset(d) => {
                let shape = d.shape.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
                let vals = match d.dtype {
                    Dtype::F16 | Dtype::F32 | Dtype::F64 => d
                        .to_f64()
                        .unwrap()
                        .iter()
                        .map(|x| format!("{x:?}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    _ => ints(d).iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" "),
                };
                out.insert(
                    format!("D\t{path}"),
                    format!("{}\t{shape}\t{vals}", dtype_name(d.dtype)),
                );
            }
        }
    }
}

/// Normalises one sidecar value field: floats are parsed so Python's and Rust's float
/// formatting (e.g. "1e-05" vs "1e-5") compare by value.
fn normalise(kind_and_vals: &str) -> String {
    kind_and_vals
        .split('\t')
        .map(|field| {
            field
                .split(' ')
                .map(|t| match t.parse::<f64>() {
                    Ok(v) if t.contains(['.', 'e', 'n', 'i']) => format!("{v:?}"),
                    _ => t.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\t")
}

/// Asserts `root` holds exactly what fixture `name`'s sidecar lists.
pub fn assert_matches_sidecar(name: &str, root: &Group) {
    let text = std::fs::read_to_string(fixture_dir().join(format!("{name}.expected.txt"))).unwrap();
    let mut expected = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let (key, val) = match fields[0] {
            "G" => (line.to_string(), String::new()),
            "D" => (format!("D\t{}", fields[1]), fields[2..].join("\t")),
            "A" => (format!("A\t{}\t{}", fields[1], fields[2]), fields[3..].join("\t")),
            other => panic!("bad sidecar line kind {other}"),
        };
        expected.insert(key, normalise(&val));
    }
    let mut got = BTreeMap::new();
    flatten(root, "", &mut got);
    let got: BTreeMap<String, String> = got.into_iter().map(|(k, v)| (k, normalise(&v))).collect();
    for (k, v) in &expected {
        match got.get(k) {
            None => panic!("{name}: missing {k}"),
            Some(g) => assert_eq!(g, v, "{name}: {k}"),
        }
    }
    for k in got.keys() {
        assert!(expected.contains_key(k), "{name}: unexpected {k}");
    }
}

/// Sorts members and attributes by name, recursively (the reader's order for untracked groups).
pub fn sorted(g: &Group) -> Group {
    let mut attrs = g.attrs.clone();
    attrs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut members: Vec<(String, Node)> = g
        .members
        .iter()
        .map(|(n, node)| {
            let node = match node {
                Node::Group(sub) => Node::Group(sorted(sub)),
                Node::Dataset(d) => Node::Dataset(d.clone()),
            };
            (n.clone(), node)
        })
        .collect();
    members.sort_by(|a, b| a.0.cmp(&b.0));
    Group { attrs, members }
}

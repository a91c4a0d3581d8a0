//! The writer. Layout choice: superblock v2 + version-2 object headers ("OHDR") whose groups hold
//! compact link messages (plus the link-info and group-info messages libhdf5 requires). This
//! needs no B-trees, local heaps or symbol-table nodes, and libhdf5 reads compact groups of any
//! size. Datasets are contiguous; string attributes are fixed-length, null-terminated UTF-8
//! (no global heap). Objects are written children-first so every address is known when its
//! parent's header is built; nothing time-dependent is stored, so output is deterministic.

use crate::checksum::lookup3;
use crate::datatype::{encode, encode_fixed_string};
use crate::{bail, Attr, Dataset, Dtype, Group, Node, Result};

const UNDEF: [u8; 8] = [0xff; 8];
const MAX_DEPTH: usize = 1024;

pub fn write_file(root: &Group) -> Result<Vec<u8>> {
    let mut w = Writer { out: vec![0; 48] };
    let root_addr = w.group(root, "/", 0)?;
    let eof = w.out.len() as u64;
    let mut sb = Vec::with_capacity(48);
    sb.extend_from_slice(b"\x89HDF\r\n\x1a\n");
    sb.extend_from_slice(&[2, 8, 8, 0]); // version 2, 8-byte offsets and lengths, no flags
    sb.extend_from_slice(&0u64.to_le_bytes()); // base address
    sb.extend_from_slice(&UNDEF); // no superblock extension
    sb.extend_from_slice(&eof.to_le_bytes());
    sb.extend_from_slice(&root_addr.to_le_bytes());
    let sum = lookup3(&sb);
    sb.extend_from_slice(&sum.to_le_bytes());
    w.out[..48].copy_from_slice(&sb);
    Ok(w.out)
}

struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn group(&mut self, g: &Group, path: &str, depth: usize) -> Result<u64> {
        if depth > MAX_DEPTH {
            bail!("{path}: groups nested deeper than {MAX_DEPTH}");
        }
        let mut links = Vec::with_capacity(g.members.len());
        for (i, (name, node)) in g.members.iter().enumerate() {
            check_name(name, path)?;
            if g.members[..i].iter().any(|(n, _)| n == name) {
                bail!("{path}: duplicate member name {name:?}");
            }
            let child = if path == "/" {
                format!("/{name}")
            } else {
                format!("{path}/{name}")
            };
            let addr = match node {
                Node::Group(sub) => self.group(sub, &child, depth + 1)?,
                Node::Dataset(d) => self.dataset(d, &child)?,
            };
            links.push((name.as_str(), addr));
        }
        // Link info: version 0, no creation order, no dense storage (undefined heap and index).
        let mut linfo = vec![0u8, 0];
        linfo.extend_from_slice(&UNDEF);
        linfo.extend_from_slice(&UNDEF);
        // Group info: store the compact/dense thresholds so that they agree with the number of
        // compact links present (libhdf5's default is at most 8 compact links).
        let nlinks =
            u16::try_from(links.len().max(8)).map_err(|_| crate::Error(format!("{path}: more than 65535 members")))?;
        let mut ginfo = vec![0u8, 1];
        ginfo.extend_from_slice(&nlinks.to_le_bytes());
        ginfo.extend_from_slice(&6u16.to_le_bytes());
        let mut msgs = vec![(0x02u8, 0u8, linfo), (0x0A, 0, ginfo)];
        for (name, addr) in links {
            let mut m = vec![1u8];
            let n = name.len();
            // Flags: name-length field of 1 or 2 bytes, plus "charset present" (UTF-8).
            if n < 256 {
                m.extend_from_slice(&[0x10, 1, n as u8]);
            } else {
                m.extend_from_slice(&[0x11, 1]);
                m.extend_from_slice(&(n as u16).to_le_bytes());
            }
            m.extend_from_slice(name.as_bytes());
            m.extend_from_slice(&addr.to_le_bytes());
            msgs.push((0x06, 0, m));
        }
        for (name, a) in &g.attrs {
            msgs.push((0x0C, 0, attribute(name, a, path)?));
        }
        self.header(&msgs, path)
    }

    fn dataset(&mut self, d: &Dataset, path: &str) -> Result<u64> {
        let n = d.shape.iter().try_fold(1usize, |a, &x| a.checked_mul(x));
        let expected = n.and_then(|n| n.checked_mul(d.dtype.size()));
        if expected != Some(d.data.len()) {
            bail!(
                "{path}: dataset of shape {:?} {:?} needs {expected:?} bytes, has {}",
                d.shape,
                d.dtype,
                d.data.len()
            );
        }
        let mut layout = vec![3u8, 1]; // layout version 3, contiguous
        if d.data.is_empty() {
            layout.extend_from_slice(&UNDEF);
        } else {
            layout.extend_from_slice(&(self.out.len() as u64).to_le_bytes());
            self.out.extend_from_slice(&d.data);
        }
        layout.extend_from_slice(&(d.data.len() as u64).to_le_bytes());
        let shape: Vec<u64> = d.shape.iter().map(|&x| x as u64).collect();
        // Fill value v3: late allocation, write fill "if set", no fill value defined.
        let fill = vec![3u8, 0x0A];
        let msgs = vec![
            (0x01u8, 0u8, dataspace(&shape)),
            (0x03, 1, encode(d.dtype)),
            (0x05, 1, fill),
            (0x08, 0, layout),
        ];
        self.header(&msgs, path)
    }

    /// Appends a version-2 object header holding `msgs` (type, flags, body); returns its address.
    fn header(&mut self, msgs: &[(u8, u8, Vec<u8>)], path: &str) -> Result<u64> {
        let mut body = Vec::new();
        for (t, flags, data) in msgs {
            let Ok(size) = u16::try_from(data.len()) else {
                bail!(
                    "{path}: header message of {} bytes exceeds 65535 (attribute too large?)",
                    data.len()
                );
            };
            body.push(*t);
            body.extend_from_slice(&size.to_le_bytes());
            body.push(*flags);
            body.extend_from_slice(data);
        }
        let addr = self.out.len() as u64;
        let mut h = Vec::with_capacity(body.len() + 14);
        h.extend_from_slice(b"OHDR");
        h.extend_from_slice(&[2, 0x02]); // version 2; chunk #0 size stored in 4 bytes
        let Ok(size) = u32::try_from(body.len()) else {
            bail!("{path}: object header too large")
        };
        h.extend_from_slice(&size.to_le_bytes());
        h.extend_from_slice(&body);
        let sum = lookup3(&h);
        h.extend_from_slice(&sum.to_le_bytes());
        self.out.extend_from_slice(&h);
        Ok(addr)
    }
}

fn check_name(name: &str, path: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name.len() > u16::MAX as usize {
        bail!("{path}: invalid member name {name:?} (must be non-empty, without '/')");
    }
    Ok(())
}

/// Dataspace message version 2: scalar for an empty shape, simple otherwise.
fn dataspace(shape: &[u64]) -> Vec<u8> {
    let mut m = vec![2u8, shape.len() as u8, 0, if shape.is_empty() { 0 } else { 1 }];
    for d in shape {
        m.extend_from_slice(&d.to_le_bytes());
    }
    m
}

/// Attribute message version 3 (UTF-8 name, unpadded fields).
fn attribute(name: &str, a: &Attr, path: &str) -> Result<Vec<u8>> {
    check_name(name, path)?;
    let (dt, ds, data) = match a {
        Attr::String(s) => {
            let mut data = s.as_bytes().to_vec();
            data.push(0);
            (encode_fixed_string(data.len()), dataspace(&[]), data)
        }
        Attr::F64(v) => (
            encode(Dtype::F64),
            dataspace(&[v.len() as u64]),
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        Attr::I64(v) => (
            encode(Dtype::I64),
            dataspace(&[v.len() as u64]),
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
    };
    let mut m = vec![3u8, 0];
    m.extend_from_slice(&((name.len() + 1) as u16).to_le_bytes());
    m.extend_from_slice(&(dt.len() as u16).to_le_bytes());
    m.extend_from_slice(&(ds.len() as u16).to_le_bytes());
    m.push(1); // name encoding: UTF-8
    m.extend_from_slice(name.as_bytes());
    m.push(0);
    m.extend_from_slice(&dt);
    m.extend_from_slice(&ds);
    m.extend_from_slice(&data);
    Ok(m)
}

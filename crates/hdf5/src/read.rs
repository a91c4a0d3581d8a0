//! The reader: walks groups from the root (symbol tables, compact links, dense links), and
//! materialises datasets and attributes, charging all data to the budget before allocating.

use crate::btree;
use crate::cursor::{Cursor, FileCtx};
use crate::datatype::{self, Datatype};
use crate::heaps::{global_heap_object, utf8, FractalHeap, LocalHeap};
use crate::layout;
use crate::object::*;
use crate::{bail, Attr, Dataset, Group, Limits, Node, Result};

pub fn read_file(bytes: &[u8], limits: &Limits) -> Result<Group> {
    let (f, root) = superblock(bytes)?;
    let mut r = Reader {
        f,
        budget: Budget::new(limits),
        ancestors: Vec::new(),
    };
    match r.object(root, "/")? {
        Node::Group(g) => Ok(g),
        Node::Dataset(_) => bail!("/: the root object is a dataset, expected a group"),
    }
}

struct Reader<'a> {
    f: FileCtx<'a>,
    budget: Budget,
    /// Object header addresses of the groups being read, to detect a group containing itself.
    ancestors: Vec<u64>,
}

/// A link from a group: its name, the object's header address, and its creation order if known.
struct Link {
    name: String,
    addr: u64,
    order: Option<u64>,
}

impl<'a> Reader<'a> {
    fn object(&mut self, addr: u64, path: &str) -> Result<Node> {
        if self.ancestors.contains(&addr) {
            bail!("{path}: group contains itself (cycle back to address {addr})");
        }
        if self.ancestors.len() > self.budget.max_depth {
            bail!(
                "{path}: groups nested deeper than Limits::max_depth ({})",
                self.budget.max_depth
            );
        }
        let msgs = object_header(&self.f, addr, &mut self.budget, path)?;
        let has = |k: u16| msgs.iter().any(|m| m.kind == k);
        if has(MSG_SYMBOL_TABLE) || has(MSG_LINK_INFO) || has(MSG_LINK) {
            self.ancestors.push(addr);
            let g = self.group(&msgs, path);
            self.ancestors.pop();
            Ok(Node::Group(g?))
        } else if has(MSG_LAYOUT) {
            Ok(Node::Dataset(self.dataset(&msgs, path)?))
        } else if has(MSG_DATATYPE) {
            bail!("{path}: committed (named) datatypes are not supported")
        } else {
            bail!("{path}: object at address {addr} is neither a group nor a dataset")
        }
    }

    fn group(&mut self, msgs: &[Message<'a>], path: &str) -> Result<Group> {
        let mut links = Vec::new();
        let mut order_tracked = false;
        for m in msgs {
            match m.kind {
                MSG_SYMBOL_TABLE => self.symbol_table(m.data, path, &mut links)?,
                MSG_LINK => {
                    if let Some(l) = parse_link(m.data, &self.f, path)? {
                        links.push(l);
                    }
                }
                MSG_LINK_INFO => order_tracked |= self.link_info(m.data, path, &mut links)?,
                _ => {}
            }
        }
        // h5py iterates by name, or by creation order when the group tracks it.
        if order_tracked && links.iter().all(|l| l.order.is_some()) {
            links.sort_by_key(|l| l.order);
        } else {
            links.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let mut group = Group {
            attrs: self.attributes(msgs, path)?,
            members: Vec::with_capacity(links.len()),
        };
        for l in links {
            if group.members.iter().any(|(n, _)| *n == l.name) {
                bail!("{path}: duplicate link name {:?}", l.name);
            }
            let child = if path == "/" {
                format!("/{}", l.name)
            } else {
                format!("{path}/{}", l.name)
            };
            let node = self.object(l.addr, &child)?;
            group.members.push((l.name, node));
        }
        Ok(group)
    }

    fn symbol_table(&mut self, data: &[u8], path: &str, links: &mut Vec<Link>) -> Result<()> {
        let mut c = Cursor::over(data, self.f.so, self.f.sl);
        let tree = c.addr_req("symbol table B-tree address")?;
        let heap = LocalHeap::open(&self.f, c.addr_req("symbol table heap address")?, path)?;
        let f = self.f;
        let mut snods = Vec::new();
        btree::v1_leaves(&f, tree, 0, f.sl, &mut self.budget, path, &mut |_, child| {
            snods.push(child);
            Ok(())
        })?;
        for snod in snods {
            self.budget.object(path)?;
            let mut c = f.at(snod, "symbol table node")?;
            c.sig(b"SNOD", &format!("{path}: symbol table node"))?;
            c.skip(2, "symbol table node version")?;
            let n = c.u16("symbol count")?;
            for _ in 0..n {
                let name_off = c.length("symbol name offset")?;
                let addr = c.addr_req("symbol object header address")?;
                c.skip(24, "symbol cache")?;
                let name = heap.string(name_off, path)?;
                check_link_name(&name, path)?;
                links.push(Link {
                    name,
                    addr,
                    order: None,
                });
            }
        }
        Ok(())
    }

    /// Reads dense links if the link info message points at a fractal heap. Returns whether the
    /// group tracks creation order.
    fn link_info(&mut self, data: &[u8], path: &str, links: &mut Vec<Link>) -> Result<bool> {
        let mut c = Cursor::over(data, self.f.so, self.f.sl);
        let version = c.u8("link info version")?;
        if version != 0 {
            bail!("{path}: link info message version {version}, expected 0");
        }
        let flags = c.u8("link info flags")?;
        if flags & 1 != 0 {
            c.skip(8, "max creation index")?;
        }
        let heap = c.addr("link fractal heap address")?;
        let index = c.addr("link name index address")?;
        let (Some(heap), Some(index)) = (heap, index) else {
            return Ok(flags & 1 != 0);
        };
        let f = self.f;
        let heap = FractalHeap::open(&f, heap, path)?;
        let id_len = heap.id_len();
        let mut ids = Vec::new();
        // Name-index records (type 5): 4-byte name hash, then the heap ID.
        btree::v2_records(&f, index, &mut self.budget, path, &mut |rec| {
            match rec.get(4..4 + id_len) {
                Some(id) => ids.push(id.to_vec()),
                None => bail!(
                    "{path}: link name record of {} bytes, expected {}",
                    rec.len(),
                    4 + id_len
                ),
            }
            Ok(())
        })?;
        for id in ids {
            let msg = heap.get(&id, &mut self.budget, path)?;
            if let Some(l) = parse_link(&msg, &f, path)? {
                links.push(l);
            }
        }
        Ok(flags & 1 != 0)
    }

    fn attributes(&mut self, msgs: &[Message<'a>], path: &str) -> Result<Vec<(String, Attr)>> {
        let mut raw: Vec<Vec<u8>> = msgs
            .iter()
            .filter(|m| m.kind == MSG_ATTRIBUTE)
            .map(|m| m.data.to_vec())
            .collect();
        let f = self.f;
        for m in msgs.iter().filter(|m| m.kind == MSG_ATTRIBUTE_INFO) {
            let mut c = Cursor::over(m.data, f.so, f.sl);
            c.skip(1, "attribute info version")?;
            let flags = c.u8("attribute info flags")?;
            if flags & 1 != 0 {
                c.skip(2, "max attribute creation index")?;
            }
            let (Some(heap), Some(index)) = (c.addr("attribute heap")?, c.addr("attribute name index")?) else {
                continue;
            };
            let heap = FractalHeap::open(&f, heap, path)?;
            let mut ids = Vec::new();
            // Attribute name records (type 8): 8-byte heap ID, flags, creation order, hash.
            btree::v2_records(&f, index, &mut self.budget, path, &mut |rec| {
                match rec.get(..8) {
                    Some(id) => ids.push(id.to_vec()),
                    None => bail!("{path}: attribute name record too short"),
                }
                Ok(())
            })?;
            for id in ids {
                raw.push(heap.get(&id, &mut self.budget, path)?);
            }
        }
        let mut out = Vec::new();
        for data in raw {
            self.budget.object(path)?;
            if let Some(a) = self.attribute(&data, path)? {
                out.push(a);
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Decodes an attribute message. Attributes of types this crate cannot represent (compound,
    /// string arrays, ...) are skipped rather than failing the whole file: Keras never writes them.
    fn attribute(&mut self, data: &[u8], path: &str) -> Result<Option<(String, Attr)>> {
        let mut c = Cursor::over(data, self.f.so, self.f.sl);
        let version = c.u8("attribute version")?;
        let flags = c.u8("attribute flags")?;
        let name_len = usize::from(c.u16("attribute name size")?);
        let dt_len = usize::from(c.u16("attribute datatype size")?);
        let ds_len = usize::from(c.u16("attribute dataspace size")?);
        let pad = |n: usize| if version == 1 { n.div_ceil(8) * 8 } else { n };
        match version {
            1 | 2 => {}
            3 => c.skip(1, "attribute name encoding")?,
            v => bail!("{path}: attribute message version {v}, expected 1-3"),
        }
        if flags & 3 != 0 {
            bail!("{path}: attributes with shared datatypes or dataspaces are not supported");
        }
        let name_raw = c.bytes(pad(name_len), "attribute name")?;
        let name_raw = &name_raw[..name_len.min(name_raw.len())];
        let name = utf8(name_raw.split(|&b| b == 0).next().unwrap_or_default(), path)?;
        let where_ = format!("{path} attribute {name:?}");
        let dt = c.bytes(pad(dt_len), "attribute datatype")?;
        let ds = c.bytes(pad(ds_len), "attribute dataspace")?;
        let Ok(dt) = datatype::parse(dt, &where_) else {
            return Ok(None);
        };
        let Some((dims, _)) = dataspace(ds, self.f.sl, &where_)? else {
            return Ok(None);
        };
        let n = count(&dims, &where_)?;
        let esize = dt.file_size(self.f.so) as u64;
        let bytes = n
            .checked_mul(esize)
            .ok_or_else(|| crate::Error(format!("{where_}: size overflows")))?;
        self.budget.bytes(bytes, &where_)?;
        let raw = c.bytes(bytes as usize, "attribute data")?;
        let value = match dt {
            Datatype::Num { dtype, big_endian } => {
                let mut v = raw.to_vec();
                datatype::to_little_endian(&mut v, dtype, big_endian);
                let ints: Option<Vec<i64>> = v
                    .chunks_exact(dtype.size())
                    .map(|e| datatype::element_to_i64(dtype, e))
                    .collect();
                match ints {
                    Some(ints) => Attr::I64(ints),
                    None => Attr::F64(
                        v.chunks_exact(dtype.size())
                            .map(|e| datatype::element_to_f64(dtype, e))
                            .collect(),
                    ),
                }
            }
            Datatype::FixedString { .. } if n == 1 => {
                let s = raw.split(|&b| b == 0).next().unwrap_or_default();
                Attr::String(String::from_utf8_lossy(s).trim_end_matches(' ').to_string())
            }
            Datatype::VlenString if n == 1 => {
                let mut c = Cursor::over(raw, self.f.so, self.f.sl);
                let len = c.u32("vlen string length")? as usize;
                let coll = c.addr("vlen string heap collection")?;
                let index = c.u32("vlen string heap index")?;
                match coll {
                    None => Attr::String(String::new()),
                    Some(coll) => {
                        let obj = global_heap_object(&self.f, coll, index, &where_)?;
                        let Some(s) = obj.get(..len) else {
                            bail!("{where_}: string of {len} bytes, global heap object has {}", obj.len());
                        };
                        Attr::String(String::from_utf8_lossy(s).into_owned())
                    }
                }
            }
            _ => return Ok(None),
        };
        Ok(Some((name, value)))
    }

    fn dataset(&mut self, msgs: &[Message<'a>], path: &str) -> Result<Dataset> {
        let find = |k: u16, what: &str| match msgs.iter().find(|m| m.kind == k) {
            Some(m) if m.flags & 2 != 0 => bail!("{path}: shared {what} messages are not supported"),
            Some(m) => Ok(m.data),
            None => bail!("{path}: dataset has no {what} message"),
        };
        let dt = datatype::parse(find(MSG_DATATYPE, "datatype")?, path)?;
        let Datatype::Num { dtype, big_endian } = dt else {
            bail!("{path}: string datasets are not supported (expected a numeric datatype)");
        };
        let (dims, max_dims) =
            dataspace(find(MSG_DATASPACE, "dataspace")?, self.f.sl, path)?.unwrap_or_else(|| (vec![0], vec![0]));
        let n = count(&dims, path)?;
        let nbytes = n
            .checked_mul(dtype.size() as u64)
            .ok_or_else(|| crate::Error(format!("{path}: size overflows")))?;
        // Charged before anything is allocated, so a claimed huge shape fails here.
        self.budget.bytes(nbytes, path)?;
        let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
        let filters = msgs.iter().find(|m| m.kind == MSG_FILTERS).map(|m| m.data);
        let layout = find(MSG_LAYOUT, "layout")?;
        let fill = fill_value(msgs, dtype.size(), path)?;
        let mut data = layout::read_data(
            &self.f,
            layout,
            filters,
            &dims,
            &max_dims,
            dtype.size(),
            nbytes,
            &fill,
            &mut self.budget,
            path,
        )?;
        datatype::to_little_endian(&mut data, dtype, big_endian);
        Ok(Dataset { shape, dtype, data })
    }
}

/// Number of elements of `dims`, checked.
pub fn count(dims: &[u64], where_: &str) -> Result<u64> {
    let mut n = 1u64;
    for &d in dims {
        n = match n.checked_mul(d) {
            Some(v) if usize::try_from(v).is_ok() => v,
            _ => bail!("{where_}: element count of shape {dims:?} overflows"),
        };
    }
    Ok(n)
}

/// Decodes a link message; soft and external links are skipped (Keras never writes them and
/// the public API has no node for them).
fn parse_link(data: &[u8], f: &FileCtx, path: &str) -> Result<Option<Link>> {
    let mut c = Cursor::over(data, f.so, f.sl);
    let version = c.u8("link version")?;
    if version != 1 {
        bail!("{path}: link message version {version}, expected 1");
    }
    let flags = c.u8("link flags")?;
    let kind = if flags & 0x08 != 0 { c.u8("link type")? } else { 0 };
    let order = if flags & 0x04 != 0 {
        Some(c.u64("link creation order")?)
    } else {
        None
    };
    if flags & 0x10 != 0 {
        c.skip(1, "link name charset")?;
    }
    let name_len = c.uint(1 << (flags & 3), "link name length")?;
    let name_len = usize::try_from(name_len).map_err(|_| crate::Error(format!("{path}: link name too long")))?;
    let name = utf8(c.bytes(name_len, "link name")?, path)?;
    check_link_name(&name, path)?;
    if kind != 0 {
        return Ok(None);
    }
    let addr = c.addr_req("hard link address")?;
    Ok(Some(Link { name, addr, order }))
}

/// Rejects names that would make paths ambiguous ("", ".", or containing '/').
fn check_link_name(name: &str, path: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == "." {
        bail!("{path}: invalid link name {name:?}");
    }
    Ok(())
}

/// The dataset's fill value (one element, file byte order), used for storage never written.
/// Absent or undefined fill values read as zeros, as in libhdf5.
fn fill_value(msgs: &[Message], esize: usize, path: &str) -> Result<Vec<u8>> {
    let zero = vec![0u8; esize];
    let value = if let Some(m) = msgs.iter().find(|m| m.kind == MSG_FILL_VALUE) {
        let mut c = Cursor::over(m.data, 8, 8);
        let defined = match c.u8("fill value version")? {
            1 => {
                c.skip(2, "fill value times")?;
                c.u8("fill value defined")?;
                true // version 1 always stores the size field
            }
            2 => {
                c.skip(2, "fill value times")?;
                c.u8("fill value defined")? != 0
            }
            3 => c.u8("fill value flags")? & 0x20 != 0,
            v => bail!("{path}: fill value message version {v}, expected 1-3"),
        };
        if !defined {
            return Ok(zero);
        }
        let size = c.u32("fill value size")? as usize;
        c.bytes(size, "fill value")?
    } else if let Some(m) = msgs.iter().find(|m| m.kind == MSG_FILL_VALUE_OLD) {
        let mut c = Cursor::over(m.data, 8, 8);
        let size = c.u32("fill value size")? as usize;
        c.bytes(size, "fill value")?
    } else {
        return Ok(zero);
    };
    match value.len() {
        0 => Ok(zero),
        n if n == esize => Ok(value.to_vec()),
        n => bail!("{path}: fill value of {n} bytes for elements of {esize} bytes"),
    }
}

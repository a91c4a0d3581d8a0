//! Index structures: version-1 B-trees (symbol-table groups and layout-v3 chunk indexes),
//! version-2 B-trees (dense link/attribute name indexes) and fixed arrays (layout-v4 chunk
//! index). Traversal is iterative or depth-bounded and every node is charged to the budget,
//! so a hostile tree (cycles, absurd depths) ends in an error.

use crate::cursor::{enc_size, FileCtx};
use crate::object::Budget;
use crate::{bail, Result};

/// Calls `visit(key_before_child, child_address)` for every leaf-level child of the v1 B-tree at
/// `addr`. `node_type` is 0 for group nodes, 1 for chunk nodes; `key_size` the key length.
pub fn v1_leaves(
    f: &FileCtx,
    addr: u64,
    node_type: u8,
    key_size: usize,
    budget: &mut Budget,
    where_: &str,
    visit: &mut dyn FnMut(&[u8], u64) -> Result<()>,
) -> Result<()> {
    // (address, expected level or None for the root)
    let mut stack = vec![(addr, None::<u8>)];
    while let Some((a, expect)) = stack.pop() {
        budget.object(where_)?;
        let mut c = f.at(a, "v1 B-tree node")?;
        c.sig(b"TREE", &format!("{where_}: v1 B-tree node"))?;
        let t = c.u8("B-tree node type")?;
        if t != node_type {
            bail!("{where_}: v1 B-tree node at address {a} has type {t}, expected {node_type}");
        }
        let level = c.u8("B-tree node level")?;
        if let Some(e) = expect {
            // Levels must strictly decrease towards the leaves, which also rules out cycles.
            if level != e {
                bail!("{where_}: v1 B-tree node at address {a} has level {level}, expected {e}");
            }
        }
        if usize::from(level) > budget.max_depth {
            bail!("{where_}: v1 B-tree deeper than Limits::max_depth");
        }
        let entries = c.u16("B-tree entries used")?;
        c.skip(2 * f.so, "B-tree sibling addresses")?;
        let mut children = Vec::new();
        for _ in 0..entries {
            let key = c.bytes(key_size, "B-tree key")?;
            let child = c.addr_req("B-tree child address")?;
            children.push((key, child));
        }
        if level == 0 {
            for (key, child) in children {
                visit(key, child)?;
            }
        } else {
            // Pushed in reverse so children are visited left to right.
            for (_, child) in children.into_iter().rev() {
                stack.push((child, Some(level - 1)));
            }
        }
    }
    Ok(())
}

/// Calls `visit(record)` for every record of the v2 B-tree whose header is at `addr`.
pub fn v2_records(
    f: &FileCtx,
    addr: u64,
    budget: &mut Budget,
    where_: &str,
    visit: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut c = f.at(addr, "v2 B-tree header")?;
    c.sig(b"BTHD", &format!("{where_}: v2 B-tree header"))?;
    let version = c.u8("v2 B-tree version")?;
    if version != 0 {
        bail!("{where_}: v2 B-tree version {version}, expected 0");
    }
    let _type = c.u8("v2 B-tree type")?;
    let node_size = u64::from(c.u32("v2 B-tree node size")?);
    let rec_size = u64::from(c.u16("v2 B-tree record size")?);
    let depth = usize::from(c.u16("v2 B-tree depth")?);
    c.skip(2, "split/merge percentages")?;
    let root = c.addr("v2 B-tree root address")?;
    let root_nrec = c.u16("v2 B-tree root record count")?;
    let Some(root) = root else { return Ok(()) };
    if depth > budget.max_depth.min(16) || rec_size == 0 || node_size <= 10 {
        bail!("{where_}: v2 B-tree has depth {depth}, record size {rec_size}, node size {node_size}");
    }
    // Per-level sizes, as libhdf5's H5B2__hdr_init computes them: records per node and the byte
    // widths of the child record counts stored in internal nodes.
    let so = f.so as u64;
    let leaf_max = (node_size - 10) / rec_size;
    let nrec_size = enc_size(leaf_max) as u64;
    let mut cum_max = vec![leaf_max];
    let mut cum_size = vec![0u64];
    for d in 1..=depth {
        let ptr = so + nrec_size + if d > 1 { cum_size[d - 1] } else { 0 };
        let max = node_size.saturating_sub(10 + ptr) / (rec_size + ptr);
        let cm = max.saturating_add(1).saturating_mul(cum_max[d - 1]).saturating_add(max);
        cum_max.push(cm);
        cum_size.push(enc_size(cm) as u64);
    }
    let mut stack = vec![(root, u64::from(root_nrec), depth)];
    while let Some((a, nrec, d)) = stack.pop() {
        budget.object(where_)?;
        let mut c = f.at(a, "v2 B-tree node")?;
        let sig = if d == 0 { b"BTLF" } else { b"BTIN" };
        c.sig(sig, &format!("{where_}: v2 B-tree node"))?;
        c.skip(2, "v2 B-tree node version and type")?;
        for _ in 0..nrec {
            visit(c.bytes(rec_size as usize, "v2 B-tree record")?)?;
        }
        if d > 0 {
            for _ in 0..=nrec {
                let child = c.addr_req("v2 B-tree child address")?;
                let n = c.uint(nrec_size as usize, "v2 B-tree child record count")?;
                if d > 1 {
                    c.skip(cum_size[d - 1] as usize, "v2 B-tree child total records")?;
                }
                if n > leaf_max.max(cum_max[d - 1]) {
                    bail!("{where_}: v2 B-tree child at address {child} claims {n} records");
                }
                stack.push((child, n, d - 1));
            }
        }
    }
    Ok(())
}

/// The entries (each `entry_size` bytes) of the fixed array whose header is at `addr`, in index
/// order. Returns (entry size, entries); unallocated pages yield entries of all-0xff bytes.
pub fn fixed_array(f: &FileCtx, addr: u64, budget: &mut Budget, where_: &str) -> Result<(usize, Vec<u8>)> {
    budget.object(where_)?;
    let mut c = f.at(addr, "fixed array header")?;
    c.sig(b"FAHD", &format!("{where_}: fixed array header"))?;
    c.skip(1, "fixed array version")?;
    c.skip(1, "fixed array client id")?;
    let entry_size = usize::from(c.u8("fixed array entry size")?);
    let page_bits = c.u8("fixed array page bits")?;
    let n = c.length("fixed array entry count")?;
    let dblock = c.addr_req("fixed array data block address")?;
    if entry_size == 0 || page_bits > 32 {
        bail!("{where_}: fixed array with entry size {entry_size}, page bits {page_bits}");
    }
    let total = n.checked_mul(entry_size as u64).filter(|&t| t <= f.buf.len() as u64);
    let Some(total) = total else {
        bail!("{where_}: fixed array of {n} entries is larger than the file")
    };
    let mut c = f.at(dblock, "fixed array data block")?;
    c.sig(b"FADB", &format!("{where_}: fixed array data block"))?;
    c.skip(2 + f.so, "fixed array data block header")?;
    let page = 1u64 << page_bits;
    if n <= page {
        let data = c.bytes(total as usize, "fixed array entries")?;
        return Ok((entry_size, data.to_vec()));
    }
    let npages = n.div_ceil(page);
    let bitmap = c
        .bytes(npages.div_ceil(8) as usize, "fixed array page bitmap")?
        .to_vec();
    c.skip(4, "fixed array data block checksum")?;
    let mut out = Vec::with_capacity(total as usize);
    for p in 0..npages {
        budget.object(where_)?;
        let count = page.min(n - p * page) as usize;
        let bytes = count * entry_size;
        // Bitmap bits are most-significant first, as H5VM_bit_get reads them.
        let present = bitmap[(p / 8) as usize] & (0x80 >> (p % 8)) != 0;
        if present {
            out.extend_from_slice(c.bytes(bytes, "fixed array page")?);
            c.skip(4, "fixed array page checksum")?;
        } else {
            c.skip(bytes + 4, "fixed array page")?;
            out.resize(out.len() + bytes, 0xff);
        }
    }
    Ok((entry_size, out))
}

/// The first `needed` entries of the extensible array whose header is at `addr` (layout-v4
/// chunk index for datasets with one unlimited dimension). Returns (entry size, entries);
/// unallocated blocks yield entries of all-0xff bytes (undefined addresses).
pub fn extensible_array(
    f: &FileCtx,
    addr: u64,
    needed: u64,
    budget: &mut Budget,
    where_: &str,
) -> Result<(usize, Vec<u8>)> {
    budget.object(where_)?;
    let mut c = f.at(addr, "extensible array header")?;
    c.sig(b"EAHD", &format!("{where_}: extensible array header"))?;
    c.skip(2, "extensible array version and client id")?;
    let esize = usize::from(c.u8("extensible array element size")?);
    let max_bits = u32::from(c.u8("extensible array max elements bits")?);
    let iblock_elmts = u64::from(c.u8("index block elements")?);
    let dblk_min = u64::from(c.u8("data block min elements")?);
    let sblk_min_ptrs = u64::from(c.u8("super block min data pointers")?);
    let page_bits = u32::from(c.u8("data block page bits")?);
    c.skip(6 * f.sl, "extensible array statistics")?;
    let iblock = c.addr("extensible array index block address")?;
    let pow2 = |v: u64| v != 0 && v.is_power_of_two();
    if esize == 0 || !pow2(dblk_min) || !pow2(sblk_min_ptrs) || max_bits > 64 || max_bits < dblk_min.trailing_zeros() {
        bail!("{where_}: extensible array header has inconsistent parameters");
    }
    let total = needed
        .checked_mul(esize as u64)
        .ok_or_else(|| crate::Error(format!("{where_}: index too large")))?;
    budget.bytes(total, where_)?;
    let mut out = Vec::with_capacity(total as usize);
    let Some(iblock) = iblock else { return Ok((esize, out)) };
    let arr_off_size = (max_bits as usize).div_ceil(8);
    // Super block s holds 2^(s/2) data blocks of 2^((s+1)/2) * dblk_min elements (H5EA__hdr_init).
    let nsblks = 1 + max_bits - dblk_min.trailing_zeros();
    let iblock_sblks = 2 * sblk_min_ptrs.trailing_zeros();
    let ndblk_addrs = 2 * (sblk_min_ptrs - 1);
    let nsblk_addrs = nsblks.saturating_sub(iblock_sblks);
    budget.object(where_)?;
    let mut c = f.at(iblock, "extensible array index block")?;
    c.sig(b"EAIB", &format!("{where_}: extensible array index block"))?;
    c.skip(2 + f.so, "index block header")?;
    let direct = c.bytes((iblock_elmts as usize) * esize, "index block elements")?;
    let take = |out: &mut Vec<u8>, data: &[u8]| {
        let room = (total as usize).saturating_sub(out.len());
        out.extend_from_slice(&data[..data.len().min(room)]);
    };
    take(&mut out, direct);
    let mut dblocks = Vec::new();
    for _ in 0..ndblk_addrs {
        dblocks.push(c.addr("index block data block address")?);
    }
    let mut sblocks = Vec::new();
    for _ in 0..nsblk_addrs {
        sblocks.push(c.addr("index block super block address")?);
    }
    let mut next_dblock = 0usize;
    for s in 0..nsblks {
        if out.len() as u64 >= total {
            break;
        }
        let count = 1u64 << (s / 2);
        let nelmts = (1u64 << s.div_ceil(2)).saturating_mul(dblk_min);
        let page = 1u64.checked_shl(page_bits).unwrap_or(u64::MAX);
        if nelmts > page {
            bail!("{where_}: paged extensible array data blocks ({nelmts} elements) are not supported");
        }
        // Data block addresses of this super block: from the index block for the first ones.
        let addrs: Vec<Option<u64>> = if s < iblock_sblks {
            let end = next_dblock + count as usize;
            let a = dblocks.get(next_dblock..end).map(|a| a.to_vec()).unwrap_or_default();
            next_dblock = end;
            a
        } else {
            // Only as many data blocks as still needed, so a hostile count allocates nothing big.
            let room = (total as usize - out.len()) / esize;
            let count = count.min((room as u64).div_ceil(nelmts.max(1)));
            match sblocks.get((s - iblock_sblks) as usize).copied().flatten() {
                None => vec![None; count as usize],
                Some(sb) => {
                    budget.object(where_)?;
                    let mut c = f.at(sb, "extensible array super block")?;
                    c.sig(b"EASB", &format!("{where_}: extensible array super block"))?;
                    c.skip(2 + f.so + arr_off_size, "super block header")?;
                    let mut a = Vec::new();
                    for _ in 0..count {
                        a.push(c.addr("super block data block address")?);
                    }
                    a
                }
            }
        };
        for a in addrs {
            if out.len() as u64 >= total {
                break;
            }
            let bytes = (nelmts as usize).saturating_mul(esize);
            match a {
                None => {
                    let room = (total as usize - out.len()).min(bytes);
                    out.resize(out.len() + room, 0xff);
                }
                Some(db) => {
                    budget.object(where_)?;
                    let mut c = f.at(db, "extensible array data block")?;
                    c.sig(b"EADB", &format!("{where_}: extensible array data block"))?;
                    c.skip(2 + f.so + arr_off_size, "data block header")?;
                    take(&mut out, c.bytes(bytes, "data block elements")?);
                }
            }
        }
    }
    Ok((esize, out))
}

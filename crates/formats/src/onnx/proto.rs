//! A minimal protobuf writer for the few ONNX messages the exporter emits. Field numbers are
//! those of the official `onnx.proto` (ONNX 1.x); only proto2 wire types 0 (varint), 2
//! (length-delimited) and 5 (32-bit float) are needed. Hand-written so the crate needs no
//! protobuf compiler or generated code.

/// `TensorProto.DataType` values used here.
pub const FLOAT: i32 = 1;
/// `TensorProto.DataType.INT64`.
pub const INT64: i32 = 7;
/// `TensorProto.DataType.BOOL`.
pub const BOOL: i32 = 9;

/// Appends protobuf fields to a byte buffer.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn tag(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }

    /// An int64/int32/enum field (negative values take ten bytes, as protobuf specifies).
    pub fn int(&mut self, field: u32, v: i64) {
        self.tag(field, 0);
        self.varint(v as u64);
    }

    /// A float field.
    pub fn float(&mut self, field: u32, v: f32) {
        self.tag(field, 5);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A bytes/string field.
    pub fn bytes(&mut self, field: u32, v: &[u8]) {
        self.tag(field, 2);
        self.varint(v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    /// A string field.
    pub fn string(&mut self, field: u32, v: &str) {
        self.bytes(field, v.as_bytes());
    }

    /// A nested message field.
    pub fn message(&mut self, field: u32, f: impl FnOnce(&mut Writer)) {
        let mut inner = Writer::default();
        f(&mut inner);
        self.bytes(field, &inner.buf);
    }

    /// A packed repeated int64 field.
    pub fn packed_ints(&mut self, field: u32, v: &[i64]) {
        let mut inner = Writer::default();
        v.iter().for_each(|&x| inner.varint(x as u64));
        self.bytes(field, &inner.buf);
    }

    /// A packed repeated float field.
    pub fn packed_floats(&mut self, field: u32, v: &[f32]) {
        let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.bytes(field, &raw);
    }
}

/// Tensor contents.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// float32 values.
    F32(Vec<f32>),
    /// int64 values.
    I64(Vec<i64>),
    /// Booleans (one byte each in `raw_data`).
    Bool(Vec<bool>),
}

/// A `TensorProto` (initializer or attribute value).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorProto {
    /// Value name.
    pub name: String,
    /// Dimensions.
    pub dims: Vec<i64>,
    /// Contents, stored little-endian in `raw_data`.
    pub data: Data,
}

impl TensorProto {
    fn encode(&self, w: &mut Writer) {
        w.packed_ints(1, &self.dims);
        let (ty, raw): (i32, Vec<u8>) = match &self.data {
            Data::F32(v) => (FLOAT, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Data::I64(v) => (INT64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Data::Bool(v) => (BOOL, v.iter().map(|&b| u8::from(b)).collect()),
        };
        w.int(2, i64::from(ty));
        if !self.name.is_empty() {
            w.string(8, &self.name);
        }
        w.bytes(9, &raw);
    }
}

/// A node attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// `FLOAT`.
    Float(f32),
    /// `INT`.
    Int(i64),
    /// `STRING`.
    Str(String),
    /// `TENSOR`.
    Tensor(TensorProto),
    /// `FLOATS`.
    Floats(Vec<f32>),
    /// `INTS`.
    Ints(Vec<i64>),
    /// `STRINGS`.
    Strs(Vec<String>),
}

/// A `NodeProto`.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeProto {
    /// Operator type (default domain).
    pub op_type: String,
    /// Node name.
    pub name: String,
    /// Input value names (an empty string is an omitted optional input).
    pub inputs: Vec<String>,
    /// Output value names.
    pub outputs: Vec<String>,
    /// Attributes, by name.
    pub attrs: Vec<(String, Attr)>,
}

impl NodeProto {
    fn encode(&self, w: &mut Writer) {
        self.inputs.iter().for_each(|i| w.string(1, i));
        self.outputs.iter().for_each(|o| w.string(2, o));
        w.string(3, &self.name);
        w.string(4, &self.op_type);
        for (name, a) in &self.attrs {
            w.message(5, |w| {
                w.string(1, name);
                // AttributeProto.type (field 20) discriminates the value field.
                match a {
                    Attr::Float(f) => {
                        w.float(2, *f);
                        w.int(20, 1);
                    }
                    Attr::Int(i) => {
                        w.int(3, *i);
                        w.int(20, 2);
                    }
                    Attr::Str(s) => {
                        w.string(4, s);
                        w.int(20, 3);
                    }
                    Attr::Tensor(t) => {
                        w.message(5, |w| t.encode(w));
                        w.int(20, 4);
                    }
                    Attr::Floats(v) => {
                        w.packed_floats(7, v);
                        w.int(20, 6);
                    }
                    Attr::Ints(v) => {
                        w.packed_ints(8, v);
                        w.int(20, 7);
                    }
                    Attr::Strs(v) => {
                        v.iter().for_each(|s| w.string(9, s));
                        w.int(20, 8);
                    }
                }
            });
        }
    }
}

/// A graph input or output: a float32 tensor whose dims are fixed or named (`dim_param`).
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    /// Value name.
    pub name: String,
    /// Element type (`FLOAT`...).
    pub elem_type: i32,
    /// Each dimension: `Ok(size)` or `Err(symbolic name)`.
    pub dims: Vec<std::result::Result<i64, String>>,
}

impl ValueInfo {
    fn encode(&self, w: &mut Writer) {
        w.string(1, &self.name);
        // TypeProto { tensor_type(1): Tensor { elem_type(1), shape(2): TensorShapeProto { dim(1) } } }
        w.message(2, |w| {
            w.message(1, |w| {
                w.int(1, i64::from(self.elem_type));
                w.message(2, |w| {
                    for d in &self.dims {
                        w.message(1, |w| match d {
                            Ok(v) => w.int(1, *v),
                            Err(p) => w.string(2, p),
                        });
                    }
                });
            });
        });
    }
}

/// A `GraphProto`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GraphProto {
    /// Graph name.
    pub name: String,
    /// Nodes in topological order.
    pub nodes: Vec<NodeProto>,
    /// Constant tensors (weights).
    pub initializers: Vec<TensorProto>,
    /// Graph inputs.
    pub inputs: Vec<ValueInfo>,
    /// Graph outputs.
    pub outputs: Vec<ValueInfo>,
}

/// A `ModelProto` with one default-domain opset import.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelProto {
    /// IR version (8 for opset 17).
    pub ir_version: i64,
    /// Default-domain opset version.
    pub opset: i64,
    /// Producer name.
    pub producer_name: String,
    /// Producer version.
    pub producer_version: String,
    /// The graph.
    pub graph: GraphProto,
}

impl ModelProto {
    /// Serializes the model.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.int(1, self.ir_version);
        w.string(2, &self.producer_name);
        w.string(3, &self.producer_version);
        w.message(7, |w| {
            let g = &self.graph;
            g.nodes.iter().for_each(|n| w.message(1, |w| n.encode(w)));
            w.string(2, &g.name);
            g.initializers.iter().for_each(|t| w.message(5, |w| t.encode(w)));
            g.inputs.iter().for_each(|v| w.message(11, |w| v.encode(w)));
            g.outputs.iter().for_each(|v| w.message(12, |w| v.encode(w)));
        });
        // OperatorSetIdProto { domain(1) = "" (omitted), version(2) }
        w.message(8, |w| w.int(2, self.opset));
        w.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_follow_the_protobuf_encoding() {
        let mut w = Writer::default();
        w.int(1, 150);
        assert_eq!(w.finish(), [0x08, 0x96, 0x01]);
        let mut w = Writer::default();
        w.int(2, -1);
        assert_eq!(
            w.finish(),
            [0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        let mut w = Writer::default();
        w.int(20, 7);
        assert_eq!(w.finish(), [0xa0, 0x01, 0x07]);
    }

    #[test]
    fn strings_floats_and_packed_fields() {
        let mut w = Writer::default();
        w.string(2, "testing");
        assert_eq!(w.finish(), b"\x12\x07testing");
        let mut w = Writer::default();
        w.float(2, 1.0);
        assert_eq!(w.finish(), [0x15, 0x00, 0x00, 0x80, 0x3f]);
        let mut w = Writer::default();
        w.packed_ints(4, &[3, 270, 86942]);
        assert_eq!(w.finish(), [0x22, 0x06, 0x03, 0x8e, 0x02, 0x9e, 0xa7, 0x05]);
    }

    #[test]
    fn model_starts_with_ir_version_and_ends_with_opset_import() {
        let m = ModelProto {
            ir_version: 8,
            opset: 17,
            producer_name: "p".into(),
            producer_version: "1".into(),
            graph: GraphProto::default(),
        };
        let bytes = m.encode();
        assert_eq!(&bytes[..2], &[0x08, 0x08]);
        assert_eq!(&bytes[bytes.len() - 4..], &[0x42, 0x02, 0x10, 0x11]);
    }
}

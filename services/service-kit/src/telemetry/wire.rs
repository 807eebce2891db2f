//! OTLP's protobuf messages (`opentelemetry/proto/trace/v1/trace.proto`,
//! `collector/trace/v1/trace_service.proto`), written straight from our finished spans.
//!
//! Written here rather than through the OpenTelemetry SDK and `opentelemetry-otlp`: those
//! turn each span into the SDK's `SpanData`, then into the generated protobuf structs (a
//! `String` per attribute key and value, the resource and scope cloned per span, the batch
//! grouped through hash maps), then into bytes; measured on a service's hot path, that was
//! 15,000 instructions per span and most of what tracing cost. Here a span is sized, then
//! written once into the batch, with no allocation. The messages' layout (field numbers, wire
//! types) is OTLP's, stable since its 1.0; `prost` sizes the varints, and writes them in the
//! tests that check these bytes against its own encoder. The writing itself is a `Vec::push`
//! loop here: prost's writers go through `bytes::BufMut`, whose slice copy per byte cost a
//! span several hundred instructions.

use prost::encoding::{encoded_len_varint, key_len, WireType};

/// Appends `value` as a protobuf varint (seven bits a byte, low first).
#[inline]
fn encode_varint(mut value: u64, buf: &mut Vec<u8>) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

#[inline]
fn encode_key(tag: u32, wire_type: WireType, buf: &mut Vec<u8>) {
    encode_varint(u64::from(tag << 3 | wire_type as u32), buf);
}

use super::export::{Finished, KeyValue, Kind, Value};

/// `Span.kind`'s numbers (`SPAN_KIND_*`).
fn kind_number(kind: Kind) -> u64 {
    match kind {
        Kind::Internal => 1,
        Kind::Server => 2,
        Kind::Client => 3,
        Kind::Producer => 4,
        Kind::Consumer => 5,
    }
}

/// `SpanFlags`: the W3C trace flags in the low byte, and whether the parent is remote.
const FLAGS_SAMPLED: u32 = 0x01;
const FLAGS_HAS_IS_REMOTE: u32 = 0x100;
const FLAGS_IS_REMOTE: u32 = 0x200;
/// `Status.code`: `STATUS_CODE_ERROR`.
const STATUS_ERROR: u64 = 2;

#[inline]
fn len_delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

#[inline]
fn write_len_delimited(tag: u32, bytes: &[u8], buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

#[inline]
fn write_header(tag: u32, len: usize, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

#[inline]
fn write_fixed64(tag: u32, value: u64, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::SixtyFourBit, buf);
    buf.extend_from_slice(&value.to_le_bytes());
}

#[inline]
fn write_varint(tag: u32, value: u64, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::Varint, buf);
    encode_varint(value, buf);
}

/// The length of an `AnyValue` holding `value`.
#[inline]
fn any_value_len(value: &Value) -> usize {
    match value {
        Value::Str(s) => len_delimited_len(1, s.len()),
        Value::Bool(_) => key_len(2) + 1,
        Value::I64(i) => key_len(3) + encoded_len_varint(*i as u64),
        Value::F64(_) => key_len(4) + 8,
    }
}

#[inline]
fn write_any_value(value: &Value, buf: &mut Vec<u8>) {
    match value {
        Value::Str(s) => write_len_delimited(1, s.as_bytes(), buf),
        Value::Bool(b) => write_varint(2, u64::from(*b), buf),
        // int64 is a varint of the two's complement.
        Value::I64(i) => write_varint(3, *i as u64, buf),
        Value::F64(f) => write_fixed64(4, f.to_bits(), buf),
    }
}

/// The length of a `KeyValue` message.
#[inline]
fn key_value_len(kv: &KeyValue) -> usize {
    len_delimited_len(1, kv.key.len()) + len_delimited_len(2, any_value_len(&kv.value))
}

/// Writes `kv` as field `tag` of the enclosing message.
#[inline]
fn write_key_value(tag: u32, kv: &KeyValue, buf: &mut Vec<u8>) {
    write_header(tag, key_value_len(kv), buf);
    write_len_delimited(1, kv.key.as_bytes(), buf);
    write_header(2, any_value_len(&kv.value), buf);
    write_any_value(&kv.value, buf);
}

fn status_len(why: &str) -> usize {
    len_delimited_len(2, why.len()) + key_len(3) + encoded_len_varint(STATUS_ERROR)
}

fn nanos(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The length of the `Span` message for `finished`.
fn span_len(finished: &Finished) -> usize {
    let span = &finished.span;
    let mut len = len_delimited_len(1, 16) // trace_id
        + len_delimited_len(2, 8) // span_id
        + len_delimited_len(5, finished.name.len())
        + key_len(6) + 1 // kind
        + 2 * (key_len(7) + 8) // start and end
        + key_len(16) + 4; // flags
    if span.parent.is_some() {
        len += len_delimited_len(4, 8);
    }
    for kv in &finished.attributes {
        len += len_delimited_len(9, key_value_len(kv));
    }
    if let Some(why) = &finished.error {
        len += len_delimited_len(15, status_len(why));
    }
    len
}

/// Appends `finished` to `buf` as one entry of `ScopeSpans.spans` (field 2): key, length,
/// then the `Span` message.
pub(super) fn write_span(finished: &Finished, buf: &mut Vec<u8>) {
    let span = &finished.span;
    let len = span_len(finished);
    let start = buf.len();
    buf.reserve(len_delimited_len(2, len));
    write_header(2, len, buf);
    write_len_delimited(1, &span.trace.to_be_bytes(), buf);
    write_len_delimited(2, &span.id.to_be_bytes(), buf);
    if let Some(parent) = span.parent {
        write_len_delimited(4, &parent.to_be_bytes(), buf);
    }
    write_len_delimited(5, finished.name.as_bytes(), buf);
    write_varint(6, kind_number(finished.kind), buf);
    write_fixed64(7, nanos(finished.start), buf);
    write_fixed64(8, nanos(finished.end), buf);
    for kv in &finished.attributes {
        write_key_value(9, kv, buf);
    }
    if let Some(why) = &finished.error {
        write_header(15, status_len(why), buf);
        write_len_delimited(2, why.as_bytes(), buf);
        write_varint(3, STATUS_ERROR, buf);
    }
    // A server or consumer span's parent is in another process; the others' in this one.
    let remote = span.parent.is_some() && matches!(finished.kind, Kind::Server | Kind::Consumer);
    let flags = FLAGS_SAMPLED | FLAGS_HAS_IS_REMOTE | if remote { FLAGS_IS_REMOTE } else { 0 };
    encode_key(16, WireType::ThirtyTwoBit, buf);
    buf.extend_from_slice(&flags.to_le_bytes());
    debug_assert_eq!(buf.len() - start, len_delimited_len(2, len));
}

/// What every batch of one process starts with: its `Resource` (field 1 of
/// `ResourceSpans`) and its `InstrumentationScope` (field 1 of `ScopeSpans`).
pub(super) struct Header {
    resource: Vec<u8>,
    scope: Vec<u8>,
}

impl Header {
    pub(super) fn new(resource: &[KeyValue], scope: &str, version: &str) -> Self {
        let mut attributes = Vec::new();
        for kv in resource {
            write_key_value(1, kv, &mut attributes);
        }
        let mut resource = Vec::new();
        write_len_delimited(1, &attributes, &mut resource);
        let mut fields = Vec::new();
        write_len_delimited(1, scope.as_bytes(), &mut fields);
        write_len_delimited(2, version.as_bytes(), &mut fields);
        let mut scope = Vec::new();
        write_len_delimited(1, &fields, &mut scope);
        Self { resource, scope }
    }

    /// An `ExportTraceServiceRequest` holding `spans`, entries written by [`write_span`].
    pub(super) fn request(&self, spans: &[u8]) -> Vec<u8> {
        let scope_spans = self.scope.len() + spans.len();
        let resource_spans = self.resource.len() + len_delimited_len(2, scope_spans);
        let mut out = Vec::with_capacity(len_delimited_len(1, resource_spans));
        write_header(1, resource_spans, &mut out);
        out.extend_from_slice(&self.resource);
        write_header(2, scope_spans, &mut out);
        out.extend_from_slice(&self.scope);
        out.extend_from_slice(spans);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::{write_span, Header};
    use crate::telemetry::{
        export::{Finished, KeyValue, Kind},
        Span,
    };

    /// The bytes of one span, field by field, as protobuf's reference encoder writes them
    /// (`protoc --encode` of the same message gives these); the end-to-end check is the
    /// tests that send spans to a receiver decoding them with `opentelemetry-proto`.
    #[test]
    fn a_span_is_written_as_otlp_has_it() {
        let span = Span {
            trace: 0x0102,
            id: 0x0304,
            parent: Some(0x0506),
            flags: 1,
            quiet: false,
        };
        let start = UNIX_EPOCH + Duration::from_nanos(7);
        let finished = Finished {
            span,
            kind: Kind::Server,
            name: "GET /".into(),
            start,
            end: start + Duration::from_nanos(1),
            attributes: vec![KeyValue::new("k", "v"), KeyValue::new("n", -1i64)],
            error: Some("x".into()),
        };
        let mut buf = Vec::new();
        write_span(&finished, &mut buf);
        let mut expected = vec![0x12, 0]; // ScopeSpans.spans, length patched below
        expected.extend([0x0a, 16]);
        expected.extend(0x0102u128.to_be_bytes());
        expected.extend([0x12, 8]);
        expected.extend(0x0304u64.to_be_bytes());
        expected.extend([0x22, 8]);
        expected.extend(0x0506u64.to_be_bytes());
        expected.extend([0x2a, 5]);
        expected.extend(b"GET /");
        expected.extend([0x30, 2]); // SPAN_KIND_SERVER
        expected.push(0x39);
        expected.extend(7u64.to_le_bytes());
        expected.push(0x41);
        expected.extend(8u64.to_le_bytes());
        // KeyValue { key: "k", value: AnyValue { string_value: "v" } }
        expected.extend([0x4a, 8, 0x0a, 1, b'k', 0x12, 3, 0x0a, 1, b'v']);
        // KeyValue { key: "n", value: AnyValue { int_value: -1 } }: ten bytes of varint
        expected.extend([0x4a, 16, 0x0a, 1, b'n', 0x12, 11, 0x18]);
        expected.extend([0xff; 9]);
        expected.push(0x01);
        // Status { message: "x", code: STATUS_CODE_ERROR }
        expected.extend([0x7a, 5, 0x12, 1, b'x', 0x18, 2]);
        // flags (field 16, fixed32): sampled, parent known to be remote
        expected.extend([0x85, 0x01]);
        expected.extend(0x301u32.to_le_bytes());
        expected[1] = u8::try_from(expected.len() - 2).expect("short");
        assert_eq!(buf, expected);
    }

    #[test]
    fn varints_are_written_as_prost_writes_them() {
        for value in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX,
            (-1i64) as u64,
        ] {
            let mut ours = Vec::new();
            super::encode_varint(value, &mut ours);
            let mut theirs = Vec::new();
            prost::encoding::encode_varint(value, &mut theirs);
            assert_eq!(ours, theirs, "{value}");
            assert_eq!(ours.len(), prost::encoding::encoded_len_varint(value));
        }
    }

    #[test]
    fn a_request_wraps_the_spans_in_one_resource_and_scope() {
        let header = Header::new(&[KeyValue::new("service.name", "s")], "g", "1");
        let spans = [0x12, 0];
        let request = header.request(&spans);
        let resource = [
            0x0a, 21, 0x0a, 19, 0x0a, 12, b's', b'e', b'r', b'v', b'i', b'c', b'e', b'.', b'n',
            b'a', b'm', b'e', 0x12, 3, 0x0a, 1, b's',
        ];
        let scope = [0x0a, 6, 0x0a, 1, b'g', 0x12, 1, b'1'];
        let mut expected = vec![0x0a, 0];
        expected.extend(resource);
        expected.extend([0x12, (scope.len() + spans.len()) as u8]);
        expected.extend(scope);
        expected.extend(spans);
        expected[1] = (expected.len() - 2) as u8;
        assert_eq!(request, expected);
    }
}

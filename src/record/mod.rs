//! A validated, zero-copy view of one BAM record's bytes (the bytes after `block_size`).
//!
//! noodles reads the BGZF blocks and the header; records are viewed here directly because the
//! decoder reads the fixed-size fields first (for cheap filtering) and copies variable-length
//! fields straight into Arrow buffers. Every length is checked against the record size, so a
//! corrupt record is an error, never a panic or an out-of-bounds read.

pub mod mismatches;

use std::fmt;

/// Size of the fixed part of a record, after `block_size`.
pub const FIXED_LEN: usize = 32;

/// Why a record's bytes are not a valid BAM record: small and `Copy`, formatted only when an
/// error is shown, so the decoder's hot path carries no `String`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// The record is shorter than the fixed part (its length).
    ShorterThanFixedPart(usize),
    /// `refID` or `next refID` outside the header's references.
    ReferenceOutOfRange {
        field: &'static str,
        id: i32,
        n_ref: usize,
    },
    EmptyReadName,
    /// The record's length cannot hold its read name, CIGAR and sequence.
    ShorterThanFields {
        len: usize,
        name_len: usize,
        n_cigar: usize,
        l_seq: usize,
    },
    ReadNameNotTerminated,
    InvalidCigarOp(u8),
    Aux(AuxError),
    /// A tag's type byte, not one of BAM's.
    InvalidTagType(u8),
    QualityAbove93(u8),
    /// A mapped record's CIGAR consumes `cigar` read bases, its sequence holds `sequence`.
    CigarSequenceMismatch {
        cigar: u64,
        sequence: usize,
    },
    /// Which text field is not valid UTF-8.
    NotUtf8(&'static str),
    /// A text column of one batch beyond Arrow's 32-bit offsets.
    TextColumnTooLarge,
}

impl fmt::Display for RecordError {
    #[cold]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ShorterThanFixedPart(len) => {
                write!(f, "record of {len} bytes is shorter than the 32-byte fixed part")
            }
            Self::ReferenceOutOfRange { field, id, n_ref } => write!(f, "{field} {id} is outside [-1, {n_ref})"),
            Self::EmptyReadName => f.write_str("read name length is 0 (it includes the terminating NUL)"),
            Self::ShorterThanFields { len, name_len, n_cigar, l_seq } => write!(
                f,
                "record of {len} bytes is too short for its read name ({name_len}), CIGAR ({n_cigar} ops) and \
                 sequence ({l_seq} bases)"
            ),
            Self::ReadNameNotTerminated => f.write_str("read name is not NUL-terminated"),
            Self::InvalidCigarOp(op) => write!(f, "invalid CIGAR op code {op}"),
            Self::Aux(e) => e.fmt(f),
            Self::InvalidTagType(ty) => write!(f, "aux field has invalid type {:?}", ty as char),
            Self::QualityAbove93(q) => write!(f, "base quality {q} is above 93"),
            Self::CigarSequenceMismatch { cigar, sequence } => {
                write!(f, "the CIGAR covers {cigar} read bases, the sequence holds {sequence}")
            }
            Self::NotUtf8(what) => write!(f, "{what} is not valid UTF-8 text"),
            Self::TextColumnTooLarge => f.write_str("text column exceeds 2 GiB in one batch"),
        }
    }
}

impl std::error::Error for RecordError {}

#[inline]
fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

#[inline]
fn i32_at(b: &[u8], i: usize) -> i32 {
    i32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

#[inline]
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// The sort position `(refID, 0-based pos)` of a record's bytes, read before any validation
/// (`buf` holds at least the fixed part).
pub fn sort_position(buf: &[u8]) -> (i32, i32) {
    (i32_at(buf, 0), i32_at(buf, 4))
}

/// One record's bytes, with the offsets of its variable-length parts.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    buf: &'a [u8],
    cigar_start: usize,
    seq_start: usize,
    qual_start: usize,
    aux_start: usize,
}

impl<'a> RawRecord<'a> {
    /// Validates the layout of `buf` (one record without its `block_size` prefix) for a file
    /// with `n_ref` reference sequences.
    pub fn parse(buf: &'a [u8], n_ref: usize) -> Result<Self, RecordError> {
        if buf.len() < FIXED_LEN {
            return Err(RecordError::ShorterThanFixedPart(buf.len()));
        }
        let ref_id = i32_at(buf, 0);
        let next_ref_id = i32_at(buf, 20);
        for (field, id) in [("refID", ref_id), ("next refID", next_ref_id)] {
            if id < -1 || (id >= 0 && id as usize >= n_ref) {
                return Err(RecordError::ReferenceOutOfRange { field, id, n_ref });
            }
        }
        let name_len = buf[8] as usize;
        if name_len == 0 {
            return Err(RecordError::EmptyReadName);
        }
        let n_cigar = u16_at(buf, 12) as usize;
        let l_seq = u32_at(buf, 16) as usize;
        let cigar_start = FIXED_LEN + name_len;
        let seq_start = cigar_start + 4 * n_cigar;
        let qual_start = seq_start + l_seq.div_ceil(2);
        let aux_start = qual_start + l_seq;
        if aux_start > buf.len() {
            return Err(RecordError::ShorterThanFields { len: buf.len(), name_len, n_cigar, l_seq });
        }
        if buf[cigar_start - 1] != 0 {
            return Err(RecordError::ReadNameNotTerminated);
        }
        Ok(Self { buf, cigar_start, seq_start, qual_start, aux_start })
    }

    #[inline]
    pub fn ref_id(&self) -> i32 {
        i32_at(self.buf, 0)
    }
    /// 0-based position, -1 when absent.
    #[inline]
    pub fn pos(&self) -> i32 {
        i32_at(self.buf, 4)
    }
    #[inline]
    pub fn mapq(&self) -> u8 {
        self.buf[9]
    }
    #[inline]
    pub fn flag(&self) -> u16 {
        u16_at(self.buf, 14)
    }
    #[inline]
    pub fn l_seq(&self) -> usize {
        u32_at(self.buf, 16) as usize
    }
    #[inline]
    pub fn next_ref_id(&self) -> i32 {
        i32_at(self.buf, 20)
    }
    #[inline]
    pub fn next_pos(&self) -> i32 {
        i32_at(self.buf, 24)
    }
    #[inline]
    pub fn tlen(&self) -> i32 {
        i32_at(self.buf, 28)
    }
    /// The read name without its NUL.
    #[inline]
    pub fn name(&self) -> &'a [u8] {
        &self.buf[FIXED_LEN..self.cigar_start - 1]
    }
    /// Raw CIGAR ops (`len << 4 | op`), little-endian u32 each.
    #[inline]
    pub fn cigar_bytes(&self) -> &'a [u8] {
        &self.buf[self.cigar_start..self.seq_start]
    }
    /// 4-bit packed bases.
    #[inline]
    pub fn seq_bytes(&self) -> &'a [u8] {
        &self.buf[self.seq_start..self.qual_start]
    }
    #[inline]
    pub fn qual_bytes(&self) -> &'a [u8] {
        &self.buf[self.qual_start..self.aux_start]
    }
    #[inline]
    pub fn aux_bytes(&self) -> &'a [u8] {
        &self.buf[self.aux_start..]
    }
    pub fn aux(&self) -> AuxFields<'a> {
        AuxFields { buf: self.aux_bytes() }
    }
}

/// Iterates CIGAR ops as `(length, op code)`.
pub fn cigar_ops(bytes: &[u8]) -> impl Iterator<Item = (u32, u8)> + '_ {
    bytes.chunks_exact(4).map(|c| {
        let v = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        (v >> 4, (v & 0xf) as u8)
    })
}

/// BAM CIGAR op codes (SAM specification, section 4.2) and what each consumes.
pub mod cigar_op {
    pub const MATCH: u8 = 0;
    pub const INSERTION: u8 = 1;
    pub const DELETION: u8 = 2;
    pub const SKIP: u8 = 3;
    pub const SOFT_CLIP: u8 = 4;
    // 5 (H, hard clip) and 6 (P, padding) consume neither reference nor read bases.
    pub const SEQ_MATCH: u8 = 7;
    pub const SEQ_MISMATCH: u8 = 8;
    /// The SAM letter of each op code.
    pub const LETTERS: &[u8; 9] = b"MIDNSHP=X";

    /// Whether `op` is a valid op code.
    pub fn is_valid(op: u8) -> bool {
        op <= SEQ_MISMATCH
    }

    /// Whether `op` advances along the reference (M, D, N, =, X).
    pub fn consumes_reference(op: u8) -> bool {
        matches!(op, MATCH | DELETION | SKIP | SEQ_MATCH | SEQ_MISMATCH)
    }

    /// Whether `op` advances along the read's sequence (M, I, S, =, X).
    pub fn consumes_query(op: u8) -> bool {
        matches!(op, MATCH | INSERTION | SOFT_CLIP | SEQ_MATCH | SEQ_MISMATCH)
    }
}

/// The bases of BAM's 4-bit sequence codes.
pub const SEQ_CODES: &[u8; 16] = b"=ACMGRSVTWYHKDBN";

/// FLAG bit 0x4: the segment is unmapped.
pub const FLAG_UNMAPPED: u16 = 0x4;

/// Number of reference bases the CIGAR `bytes` of a record with `flag` and `l_seq` bases covers
/// (M, D, N, =, X). Errors on an invalid op code, and, as htslib's `bam_read1` does, when a
/// mapped record's CIGAR consumes another number of read bases than its sequence holds.
pub fn reference_span(bytes: &[u8], flag: u16, l_seq: usize) -> Result<u64, RecordError> {
    let (mut span, mut query) = (0u64, 0u64);
    for (len, op) in cigar_ops(bytes) {
        if !cigar_op::is_valid(op) {
            return Err(RecordError::InvalidCigarOp(op));
        }
        if cigar_op::consumes_reference(op) {
            span += u64::from(len);
        }
        if cigar_op::consumes_query(op) {
            query += u64::from(len);
        }
    }
    if !bytes.is_empty() && l_seq > 0 && flag & FLAG_UNMAPPED == 0 && query != l_seq as u64 {
        return Err(RecordError::CigarSequenceMismatch { cigar: query, sequence: l_seq });
    }
    Ok(span)
}

/// One aux field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AuxField<'a> {
    pub tag: [u8; 2],
    /// The type byte: `A c C s S i I f Z H B`.
    pub ty: u8,
    /// For `B`, the element type; else 0.
    pub subtype: u8,
    /// The value bytes: the scalar's bytes, the string without its NUL, or the array elements.
    pub value: &'a [u8],
}

impl AuxField<'_> {
    /// The value of an integer-typed field (`c C s S i I`).
    #[inline(always)]
    pub fn int(&self) -> Option<i64> {
        let v = self.value;
        Some(match self.ty {
            b'c' => i64::from(v[0] as i8),
            b'C' => i64::from(v[0]),
            b's' => i64::from(i16::from_le_bytes([v[0], v[1]])),
            b'S' => i64::from(u16_at(v, 0)),
            b'i' => i64::from(i32_at(v, 0)),
            b'I' => i64::from(u32_at(v, 0)),
            _ => return None,
        })
    }

    pub fn float(&self) -> Option<f32> {
        (self.ty == b'f').then(|| f32::from_le_bytes([self.value[0], self.value[1], self.value[2], self.value[3]]))
    }

    /// The elements of an integer `B` array.
    pub fn int_array(&self) -> impl Iterator<Item = i64> + '_ {
        let width = elem_width(self.subtype).unwrap_or(1);
        let sub = self.subtype;
        self.value.chunks_exact(width).map(move |v| match sub {
            b'c' => i64::from(v[0] as i8),
            b'C' => i64::from(v[0]),
            b's' => i64::from(i16::from_le_bytes([v[0], v[1]])),
            b'S' => i64::from(u16_at(v, 0)),
            b'i' => i64::from(i32_at(v, 0)),
            _ => i64::from(u32_at(v, 0)),
        })
    }

    /// The elements of a `B:f` array.
    pub fn float_array(&self) -> impl Iterator<Item = f32> + '_ {
        self.value.chunks_exact(4).map(|v| f32::from_le_bytes([v[0], v[1], v[2], v[3]]))
    }
}

fn elem_width(ty: u8) -> Option<usize> {
    match ty {
        b'A' | b'c' | b'C' => Some(1),
        b's' | b'S' => Some(2),
        b'i' | b'I' | b'f' => Some(4),
        _ => None,
    }
}

/// The length of the smallest aux field: a tag, a type and a one-byte value.
const MIN_AUX_FIELD_LEN: usize = 4;

/// Iterator over a record's aux fields. Yields an error (then stops) on malformed data.
pub struct AuxFields<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for AuxFields<'a> {
    type Item = Result<AuxField<'a>, RecordError>;

    // Inlined into the tag decoder's loop: returned through memory, each field cost a
    // store-forwarding stall (about half of the tag columns' decode time, perf annotate).
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        // Fewer bytes than the smallest field end the fields, as in htslib's SAM formatter
        // (`sam_format1_append` in sam.c), so samtools and the table show the same fields.
        if self.buf.len() < MIN_AUX_FIELD_LEN {
            return None;
        }
        let r = self.parse_one();
        if r.is_err() {
            self.buf = &[];
        }
        Some(r.map_err(RecordError::Aux))
    }
}

/// What is wrong with an aux field; small and `Copy` so the hot path carries no `String`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuxError {
    NotNulTerminated([u8; 2], u8),
    ShortArrayHeader([u8; 2]),
    BadArraySubtype([u8; 2], u8),
    ArrayOverrun([u8; 2], usize),
    ValueOverrun([u8; 2], u8),
    BadType([u8; 2], u8),
}

impl fmt::Display for AuxError {
    #[cold]
    #[inline(never)]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match *self {
            Self::NotNulTerminated(tag, ty) => {
                format!("aux field {} of type {} is not NUL-terminated", show_tag(tag), ty as char)
            }
            Self::ShortArrayHeader(tag) => format!("aux field {} of type B ends inside its header", show_tag(tag)),
            Self::BadArraySubtype(tag, sub) => {
                format!("aux field {} has invalid B array subtype {:?}", show_tag(tag), sub as char)
            }
            Self::ArrayOverrun(tag, n) => {
                format!("aux field {} B array of {n} elements overruns the record", show_tag(tag))
            }
            Self::ValueOverrun(tag, ty) => {
                format!("aux field {} of type {} overruns the record", show_tag(tag), ty as char)
            }
            Self::BadType(tag, ty) => format!("aux field {} has invalid type byte 0x{ty:02x}", show_tag(tag)),
        };
        f.write_str(&text)
    }
}

impl<'a> AuxFields<'a> {
    #[inline(always)]
    fn parse_one(&mut self) -> Result<AuxField<'a>, AuxError> {
        let b = self.buf;
        let tag = [b[0], b[1]];
        let ty = b[2];
        let rest = &b[3..];
        let (subtype, value, used) = match ty {
            b'Z' | b'H' => match rest.iter().position(|&c| c == 0) {
                Some(n) => (0, &rest[..n], n + 1),
                None => return Err(AuxError::NotNulTerminated(tag, ty)),
            },
            b'B' => {
                if rest.len() < 5 {
                    return Err(AuxError::ShortArrayHeader(tag));
                }
                let sub = rest[0];
                let width = match elem_width(sub) {
                    Some(w) if sub != b'A' => w,
                    _ => return Err(AuxError::BadArraySubtype(tag, sub)),
                };
                let n = u32_at(rest, 1) as usize;
                let len = n.checked_mul(width).filter(|&l| l <= rest.len() - 5);
                match len {
                    Some(len) => (sub, &rest[5..5 + len], 5 + len),
                    None => return Err(AuxError::ArrayOverrun(tag, n)),
                }
            }
            _ => match elem_width(ty) {
                Some(w) if rest.len() >= w => (0, &rest[..w], w),
                Some(_) => return Err(AuxError::ValueOverrun(tag, ty)),
                None => return Err(AuxError::BadType(tag, ty)),
            },
        };
        self.buf = &rest[used..];
        Ok(AuxField { tag, ty, subtype, value })
    }
}

fn show_tag(tag: [u8; 2]) -> String {
    String::from_utf8_lossy(&tag).into_owned()
}

/// Record bytes for unit tests.
#[cfg(test)]
pub mod test_support {
    /// Builds a record's bytes from parts (refID 0, pos 99, MAPQ 60, no mate).
    pub fn record_bytes(name: &[u8], cigar: &[u32], seq_len: usize, aux: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(0i32.to_le_bytes());
        b.extend(99i32.to_le_bytes());
        b.push(name.len() as u8 + 1);
        b.push(60);
        b.extend(0u16.to_le_bytes());
        b.extend((cigar.len() as u16).to_le_bytes());
        b.extend(0u16.to_le_bytes());
        b.extend((seq_len as u32).to_le_bytes());
        b.extend((-1i32).to_le_bytes());
        b.extend((-1i32).to_le_bytes());
        b.extend(0i32.to_le_bytes());
        b.extend(name);
        b.push(0);
        for op in cigar {
            b.extend(op.to_le_bytes());
        }
        b.extend(std::iter::repeat_n(0x11, seq_len.div_ceil(2)));
        b.extend(std::iter::repeat_n(30, seq_len));
        b.extend(aux);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::record_bytes;
    use super::*;

    #[test]
    fn parses_fixed_fields_and_aux() {
        let aux = [b"NMC\x05".as_slice(), b"MDZ10A5\0", b"XBBs\x02\0\0\0\xff\xff\x07\0"].concat();
        let bytes = record_bytes(b"r1", &[(10 << 4)], 10, &aux);
        let r = RawRecord::parse(&bytes, 1).unwrap();
        assert_eq!((r.ref_id(), r.pos(), r.mapq()), (0, 99, 60));
        assert_eq!(r.name(), b"r1");
        assert_eq!(reference_span(r.cigar_bytes(), r.flag(), r.l_seq()).unwrap(), 10);
        let fields: Vec<_> = r.aux().collect::<Result<_, _>>().unwrap();
        assert_eq!(fields.len(), 3);
        assert_eq!(fields[0].int(), Some(5));
        assert_eq!(fields[1].value, b"10A5");
        assert_eq!(fields[2].int_array().collect::<Vec<_>>(), vec![-1, 7]);
    }

    #[test]
    fn rejects_inconsistent_lengths() {
        let bytes = record_bytes(b"r1", &[(10 << 4)], 10, b"");
        assert!(RawRecord::parse(&bytes[..bytes.len() - 1], 1).is_err());
        assert!(RawRecord::parse(&bytes[..20], 1).is_err());
        // refID beyond the header's reference count.
        assert!(matches!(
            RawRecord::parse(&bytes, 0),
            Err(RecordError::ReferenceOutOfRange { field: "refID", n_ref: 0, .. })
        ));
    }

    #[test]
    fn a_cigar_must_cover_the_sequence_of_a_mapped_read() {
        // 10M over 11 bases, as htslib's bam_read1 refuses it; unmapped or without SEQ, it is kept.
        let bytes = record_bytes(b"r1", &[(10 << 4)], 11, b"");
        let r = RawRecord::parse(&bytes, 1).unwrap();
        assert_eq!(
            reference_span(r.cigar_bytes(), r.flag(), r.l_seq()),
            Err(RecordError::CigarSequenceMismatch { cigar: 10, sequence: 11 })
        );
        assert_eq!(reference_span(r.cigar_bytes(), FLAG_UNMAPPED, r.l_seq()), Ok(10));
        assert_eq!(reference_span(r.cigar_bytes(), r.flag(), 0), Ok(10));
        // 4S3M2I1M covers 10 read bases and 4 reference bases.
        let ops = [(4 << 4) | 4, (3 << 4), (2 << 4) | 1, (1 << 4)];
        let bytes = record_bytes(b"r2", &ops, 10, b"");
        let r = RawRecord::parse(&bytes, 1).unwrap();
        assert_eq!(reference_span(r.cigar_bytes(), r.flag(), r.l_seq()), Ok(4));
    }

    #[test]
    fn malformed_aux_is_an_error() {
        for aux in [b"MDZ10A5".as_slice(), b"XBBs\x09\0\0\0\x01\0", b"XXq\0", b"NMi\x01", b"NMC\x01XXq\0"] {
            let bytes = record_bytes(b"r", &[], 0, aux);
            let r = RawRecord::parse(&bytes, 1).unwrap();
            assert!(r.aux().any(|f| f.is_err()), "{aux:?} accepted");
        }
        // Fewer than 4 bytes after the last field cannot hold one: htslib ignores them.
        for aux in [b"NM".as_slice(), b"NMC\x01XXZ", b"\0\0\0"] {
            let bytes = record_bytes(b"r", &[], 0, aux);
            let r = RawRecord::parse(&bytes, 1).unwrap();
            assert!(r.aux().all(|f| f.is_ok()), "{aux:?} refused");
        }
        let bytes = record_bytes(b"r", &[(1 << 4) | 9], 0, b"");
        let r = RawRecord::parse(&bytes, 1).unwrap();
        assert!(reference_span(r.cigar_bytes(), r.flag(), r.l_seq()).is_err());
    }
}

//! The table schema: one row per alignment record, columns as in SAM, and a typed `tags` struct.
//!
//! The column list is the public contract of this crate (see the README). Tag fields carry their
//! SAM type in the Arrow field metadata under [`SAM_TYPE_KEY`], because several SAM types share
//! one Arrow type (`A`, `Z` and `H` are all `Utf8`) and a value is only stored in the struct when
//! its SAM type matches exactly; everything else overflows into `tags_extra`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use datafusion::common::{plan_err, Result};

/// Field metadata key holding a tag field's SAM type (`A`, `Z`, `H`, `i`, `f`, or `B:` and the
/// array's subtype: `B:c`, `B:C`, `B:s`, `B:S`, `B:i`, `B:I`, `B:f`).
pub const SAM_TYPE_KEY: &str = "sam_type";

/// Field metadata key holding how an integer tag field is stored in BAM, which SAM's `i` leaves
/// open: see [`IntWidth`]. Absent means [`IntWidth::Smallest`].
pub const BAM_INT_TYPE_KEY: &str = "bam_int_type";

/// Column indices of the fixed columns, in schema order.
pub mod col {
    pub const QNAME: usize = 0;
    pub const FLAG: usize = 1;
    pub const RNAME: usize = 2;
    pub const POS: usize = 3;
    pub const ENDPOS: usize = 4;
    pub const MAPQ: usize = 5;
    pub const CIGAR: usize = 6;
    pub const RNEXT: usize = 7;
    pub const PNEXT: usize = 8;
    pub const TLEN: usize = 9;
    pub const SEQ: usize = 10;
    pub const QUAL: usize = 11;
    pub const TAGS: usize = 12;
    pub const TAGS_EXTRA: usize = 13;
    pub const COUNT: usize = 14;
}

/// How the value of a tag is held in the `tags` struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TagKind {
    /// `A`: one printable character.
    Char,
    /// `Z`: a string.
    String,
    /// `H`: a hex string.
    Hex,
    /// `c`, `C`, `s`, `S`, `i`, `I`: an integer, with the rule that picks each value's width.
    Int(IntWidth),
    /// `f`.
    Float,
    /// `B` with an integer subtype, kept (`b'c'`, `b'C'`, `b's'`, `b'S'`, `b'i'` or `b'I'`) because
    /// SAM text shows it (`B:C,1,2`) and a written BAM must give it back.
    IntArray(u8),
    /// `B` with subtype `f`.
    FloatArray,
}

impl TagKind {
    /// The kind of a BAM aux value, given its type byte and (for `B`) its subtype byte.
    pub fn from_bam_type(ty: u8, subtype: u8) -> Option<Self> {
        Some(match ty {
            b'A' => Self::Char,
            b'Z' => Self::String,
            b'H' => Self::Hex,
            b'c' | b'C' | b's' | b'S' | b'i' | b'I' => Self::Int(IntWidth::Fixed(ty)),
            b'f' => Self::Float,
            b'B' => match subtype {
                b'c' | b'C' | b's' | b'S' | b'i' | b'I' => Self::IntArray(subtype),
                b'f' => Self::FloatArray,
                _ => return None,
            },
            _ => return None,
        })
    }

    /// The SAM type as written in field metadata and in `TAG:TYPE` option syntax.
    pub fn sam_type(self) -> &'static str {
        match self {
            Self::Char => "A",
            Self::String => "Z",
            Self::Hex => "H",
            Self::Int(_) => "i",
            Self::Float => "f",
            Self::IntArray(b'c') => "B:c",
            Self::IntArray(b'C') => "B:C",
            Self::IntArray(b's') => "B:s",
            Self::IntArray(b'S') => "B:S",
            Self::IntArray(b'I') => "B:I",
            Self::IntArray(_) => "B:i",
            Self::FloatArray => "B:f",
        }
    }

    /// Parses the `TYPE` of a `TAG:TYPE` option entry. Any integer letter means [`TagKind::Int`]
    /// (its width is the file's);
    /// an array is `B:` and its subtype (`B:C`, or `BC`), and a bare `B` means `B:i`.
    pub fn from_sam_type(s: &str) -> Option<Self> {
        Some(match s {
            "A" => Self::Char,
            "Z" => Self::String,
            "H" => Self::Hex,
            "c" | "C" | "s" | "S" | "i" | "I" => Self::Int(IntWidth::Smallest),
            "f" => Self::Float,
            "B" => Self::IntArray(b'i'),
            _ => {
                let subtype = s.strip_prefix("B:").or_else(|| s.strip_prefix('B'))?;
                match subtype.as_bytes() {
                    [b'f'] => Self::FloatArray,
                    &[letter @ (b'c' | b'C' | b's' | b'S' | b'i' | b'I')] => Self::IntArray(letter),
                    _ => return None,
                }
            }
        })
    }

    /// The kind with the width taken from `observed` when both are integers or both integer
    /// arrays: the specification fixes that a tag is an integer, the file which width it uses.
    pub fn with_width_of(self, observed: Option<Self>) -> Self {
        match (self, observed) {
            (Self::IntArray(_), Some(Self::IntArray(subtype))) => Self::IntArray(subtype),
            (Self::Int(_), Some(Self::Int(width))) => Self::Int(width),
            _ => self,
        }
    }

    /// Whether a struct field of this kind holds a value of kind `value`: the same SAM type, and
    /// for arrays the same subtype. An integer of any width fits an integer field, whose width
    /// rule is the file's, not each value's.
    pub fn holds(self, value: Self) -> bool {
        matches!((self, value), (Self::Int(_), Self::Int(_))) || self == value
    }

    pub fn data_type(self) -> DataType {
        match self {
            Self::Char | Self::String | Self::Hex => DataType::Utf8,
            Self::Int(_) => DataType::Int64,
            Self::Float => DataType::Float32,
            Self::IntArray(_) => DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true))),
            Self::FloatArray => DataType::List(Arc::new(Field::new_list_field(DataType::Float32, true))),
        }
    }
}

/// How the integers of a tag field are stored in BAM. SAM text writes every integer as `i`, so
/// each tool picks the width by its own rule; a file keeps the rule of the tool that wrote it,
/// and a written file gives it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IntWidth {
    /// The smallest type that holds the value, unsigned for values from 0 (`C`, `S`, `I`) and
    /// signed below (`c`, `s`, `i`): htslib's rule for SAM text, so samtools' and pysam's.
    #[default]
    Smallest,
    /// The smallest type, the signed one first at each size (`c`, `C`, `s`, `S`, `i`, `I`):
    /// htsjdk's rule, so Picard's, GATK's and Java-written CRAMs'.
    SmallestSigned,
    /// One type for every value, by its letter (`c`, `C`, `s`, `S`, `i` or `I`); a value it
    /// cannot hold gets the smallest type instead.
    Fixed(u8),
}

/// The BAM integer types from narrowest to widest, each with its range.
const INT_TYPES: [(u8, i64, i64); 6] = [
    (b'c', i8::MIN as i64, i8::MAX as i64),
    (b'C', 0, u8::MAX as i64),
    (b's', i16::MIN as i64, i16::MAX as i64),
    (b'S', 0, u16::MAX as i64),
    (b'i', i32::MIN as i64, i32::MAX as i64),
    (b'I', 0, u32::MAX as i64),
];

impl IntWidth {
    /// The BAM type letter this rule gives `value`, or `None` when no BAM integer holds it.
    pub fn type_of(self, value: i64) -> Option<u8> {
        let fits = |&&(_, min, max): &&(u8, i64, i64)| (min..=max).contains(&value);
        let smallest = || match value {
            // Unsigned first: at each size, the unsigned type when the value is not negative.
            0.. => INT_TYPES.iter().filter(|(letter, _, _)| letter.is_ascii_uppercase()).find(fits),
            _ => INT_TYPES.iter().filter(|(letter, _, _)| letter.is_ascii_lowercase()).find(fits),
        };
        let found = match self {
            Self::Smallest => smallest(),
            Self::SmallestSigned => INT_TYPES.iter().find(fits),
            Self::Fixed(letter) => INT_TYPES.iter().filter(|(l, _, _)| *l == letter).find(fits).or_else(smallest),
        };
        found.map(|&(letter, _, _)| letter)
    }

    /// The rule as field metadata writes it under [`BAM_INT_TYPE_KEY`].
    pub fn metadata_value(self) -> String {
        match self {
            Self::Smallest => "smallest".into(),
            Self::SmallestSigned => "smallest_signed".into(),
            Self::Fixed(letter) => char::from(letter).to_string(),
        }
    }

    /// Parses [`metadata_value`](Self::metadata_value)'s text.
    pub fn from_metadata_value(s: &str) -> Option<Self> {
        match s {
            "smallest" => Some(Self::Smallest),
            "smallest_signed" => Some(Self::SmallestSigned),
            _ => match s.as_bytes() {
                &[letter] if INT_TYPES.iter().any(|(l, _, _)| *l == letter) => Some(Self::Fixed(letter)),
                _ => None,
            },
        }
    }
}

/// A tag name: two bytes, `[A-Za-z][A-Za-z0-9]` per the SAM spec.
pub type TagName = [u8; 2];

/// Parses and validates a tag name.
pub fn parse_tag_name(s: &str) -> Result<TagName> {
    match s.as_bytes() {
        &[a, b] if is_tag_name([a, b]) => Ok([a, b]),
        _ => plan_err!("invalid SAM tag name {s:?}: expected two characters, [A-Za-z][A-Za-z0-9]"),
    }
}

/// Whether `tag` is a valid SAM tag name; others can only go to `tags_extra`.
pub fn is_tag_name(tag: TagName) -> bool {
    tag[0].is_ascii_alphabetic() && tag[1].is_ascii_alphanumeric()
}

/// The type the SAM tags specification (SAMtags.pdf) predefines for a tag, if any.
pub fn predefined_kind(tag: TagName) -> Option<TagKind> {
    use TagKind::*;
    Some(match &tag {
        b"AM" | b"AS" | b"CM" | b"CP" | b"FI" | b"H0" | b"H1" | b"H2" | b"HI" | b"IP" | b"MN" | b"MQ" | b"NH"
        | b"NM" | b"OP" | b"PQ" | b"SM" | b"TC" | b"UQ" => Int(IntWidth::Smallest),
        b"BC" | b"BQ" | b"BZ" | b"CB" | b"CC" | b"CO" | b"CQ" | b"CR" | b"CS" | b"CT" | b"CY" | b"E2" | b"FS"
        | b"LB" | b"MC" | b"MD" | b"MI" | b"MM" | b"OA" | b"OC" | b"OQ" | b"OX" | b"PG" | b"PT" | b"PU" | b"Q2"
        | b"QT" | b"QX" | b"R2" | b"RG" | b"RX" | b"SA" | b"U2" => String,
        b"TS" => Char,
        b"CG" => IntArray(b'I'),
        b"FZ" => IntArray(b'S'),
        b"ML" => IntArray(b'C'),
        _ => return None,
    })
}

/// The fields of the `tags` struct, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagLayout {
    pub tags: Vec<(TagName, TagKind)>,
}

impl TagLayout {
    pub fn struct_fields(&self) -> Fields {
        self.tags
            .iter()
            .map(|(name, kind)| {
                let mut metadata = HashMap::from([(SAM_TYPE_KEY.to_string(), kind.sam_type().to_string())]);
                if let TagKind::Int(width) = kind {
                    metadata.insert(BAM_INT_TYPE_KEY.to_string(), width.metadata_value());
                }
                Field::new(tag_str(*name), kind.data_type(), true).with_metadata(metadata)
            })
            .collect()
    }

    /// Recovers the layout from a `tags` struct field (the inverse of [`Self::struct_fields`]).
    pub fn from_struct_fields(fields: &Fields) -> Result<Self> {
        let tags = fields
            .iter()
            .map(|f| {
                let name = parse_tag_name(f.name())?;
                let kind = f
                    .metadata()
                    .get(SAM_TYPE_KEY)
                    .and_then(|t| TagKind::from_sam_type(t))
                    .filter(|k| k.data_type() == *f.data_type())
                    .map(|k| k.with_width_of(int_width_of(f).map(TagKind::Int)));
                match kind {
                    Some(kind) => Ok((name, kind)),
                    None => plan_err!("tags field {} lacks a valid {SAM_TYPE_KEY:?} metadata entry", f.name()),
                }
            })
            .collect::<Result<_>>()?;
        Ok(Self { tags })
    }
}

/// The width rule an integer tag field's metadata gives, if any.
pub fn int_width_of(field: &Field) -> Option<IntWidth> {
    field.metadata().get(BAM_INT_TYPE_KEY).and_then(|w| IntWidth::from_metadata_value(w))
}

pub fn tag_str(name: TagName) -> String {
    String::from_utf8_lossy(&name).into_owned()
}

/// Column names, indexed by the ids in [`col`].
pub const COLUMN_NAMES: [&str; col::COUNT] = [
    "qname",
    "flag",
    "rname",
    "pos",
    "endpos",
    "mapq",
    "cigar",
    "rnext",
    "pnext",
    "tlen",
    "seq",
    "qual",
    "tags",
    "tags_extra",
];

/// The table schema for a given tag layout. A layout without fields gives no `tags` column
/// (Parquet cannot store a struct without fields), so every aux field is in `tags_extra`.
pub fn bam_schema(layout: &TagLayout) -> SchemaRef {
    let fields = COLUMN_NAMES.iter().enumerate().filter_map(|(id, &name)| {
        let (data_type, nullable) = match id {
            col::TAGS if layout.tags.is_empty() => return None,
            col::TAGS => (DataType::Struct(layout.struct_fields()), false),
            _ => fixed_column_type(id),
        };
        Some(Field::new(name, data_type, nullable))
    });
    Arc::new(Schema::new(fields.collect::<Vec<_>>()))
}

/// The type of a column other than `tags`, and whether it is nullable.
pub fn fixed_column_type(id: usize) -> (DataType, bool) {
    match id {
        col::QNAME | col::RNAME | col::CIGAR | col::RNEXT | col::SEQ | col::QUAL | col::TAGS_EXTRA => {
            (DataType::Utf8, true)
        }
        col::FLAG => (DataType::UInt16, false),
        col::POS | col::ENDPOS | col::PNEXT => (DataType::Int64, true),
        col::MAPQ => (DataType::UInt8, true),
        col::TLEN => (DataType::Int32, false),
        _ => unreachable!("column {id} is tags or not a column"),
    }
}

/// The [`col`] id of field `index` of a table schema made by [`bam_schema`] (ids and indices
/// differ after `tags` in a table without tag fields); `None` for other columns, such as
/// partition columns.
pub fn column_id(schema: &Schema, index: usize) -> Option<usize> {
    let name = schema.fields().get(index)?.name();
    COLUMN_NAMES.iter().position(|n| n == name)
}

/// Extracts the tag layout from a table schema made by [`bam_schema`].
pub fn layout_of(schema: &Schema) -> Result<TagLayout> {
    match schema.field_with_name(COLUMN_NAMES[col::TAGS]).map(|f| f.data_type()) {
        Ok(DataType::Struct(fields)) => TagLayout::from_struct_fields(fields),
        Ok(other) => plan_err!("not a BAM table schema: column tags is {other}, not the tags struct"),
        Err(_) if schema.field_with_name(COLUMN_NAMES[col::TAGS_EXTRA]).is_ok() => Ok(TagLayout::default()),
        Err(_) => plan_err!("not a BAM table schema: it has neither tags nor tags_extra"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips_through_schema() {
        let layout = TagLayout {
            tags: vec![
                (*b"NM", TagKind::Int(IntWidth::Smallest)),
                (*b"AS", TagKind::Int(IntWidth::SmallestSigned)),
                (*b"XS", TagKind::Int(IntWidth::Fixed(b'S'))),
                (*b"MD", TagKind::String),
                (*b"XA", TagKind::Char),
                (*b"XH", TagKind::Hex),
                (*b"XF", TagKind::Float),
                (*b"ML", TagKind::IntArray(b'C')),
                (*b"XI", TagKind::IntArray(b'i')),
                (*b"XB", TagKind::FloatArray),
            ],
        };
        let schema = bam_schema(&layout);
        assert_eq!(schema.fields().len(), col::COUNT);
        assert_eq!(layout_of(&schema).unwrap(), layout);
        assert_eq!(column_id(&schema, col::TAGS_EXTRA), Some(col::TAGS_EXTRA));
    }

    #[test]
    fn a_layout_without_fields_has_no_tags_column() {
        let schema = bam_schema(&TagLayout::default());
        assert_eq!(schema.fields().len(), col::COUNT - 1);
        assert!(schema.field_with_name("tags").is_err());
        assert_eq!(schema.field(col::TAGS).name(), "tags_extra");
        assert_eq!(column_id(&schema, col::TAGS), Some(col::TAGS_EXTRA));
        assert_eq!(column_id(&schema, col::QUAL), Some(col::QUAL));
        assert_eq!(column_id(&schema, col::TAGS_EXTRA), None);
        assert_eq!(layout_of(&schema).unwrap(), TagLayout::default());
    }

    #[test]
    fn tag_names_are_validated() {
        assert!(parse_tag_name("NM").is_ok());
        assert!(parse_tag_name("X0").is_ok());
        for bad in ["", "N", "NMX", "0A", "N-"] {
            assert!(parse_tag_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sam_type_strings_parse_back() {
        for kind in [
            TagKind::Char,
            TagKind::String,
            TagKind::Hex,
            TagKind::Int(IntWidth::Smallest),
            TagKind::Float,
            TagKind::IntArray(b'c'),
            TagKind::IntArray(b'C'),
            TagKind::IntArray(b's'),
            TagKind::IntArray(b'S'),
            TagKind::IntArray(b'i'),
            TagKind::IntArray(b'I'),
            TagKind::FloatArray,
        ] {
            assert_eq!(TagKind::from_sam_type(kind.sam_type()), Some(kind));
        }
    }

    #[test]
    fn integer_widths_follow_each_rule() {
        let letters = |width: IntWidth, values: &[i64]| -> String {
            values.iter().map(|&v| width.type_of(v).map_or('-', char::from)).collect()
        };
        let values = [0, 127, 128, 255, 256, 32767, 32768, 65535, 65536, 2147483647, 2147483648, 4294967295];
        assert_eq!(letters(IntWidth::Smallest, &values), "CCCCSSSSIIII");
        assert_eq!(letters(IntWidth::SmallestSigned, &values), "ccCCssSSiiII");
        assert_eq!(letters(IntWidth::Fixed(b's'), &values), "ssssssSSIIII");
        let negative = [-1, -128, -129, -32768, -32769, -2147483648];
        assert_eq!(letters(IntWidth::Smallest, &negative), "ccssii");
        assert_eq!(letters(IntWidth::SmallestSigned, &negative), "ccssii");
        assert_eq!(letters(IntWidth::Fixed(b'C'), &negative), "ccssii");
        assert_eq!(letters(IntWidth::Smallest, &[4294967296, -2147483649]), "--");
        for width in [IntWidth::Smallest, IntWidth::SmallestSigned, IntWidth::Fixed(b'I')] {
            assert_eq!(IntWidth::from_metadata_value(&width.metadata_value()), Some(width));
        }
        assert_eq!(IntWidth::from_metadata_value("x"), None);
    }
}

//! Aux fields written as BAM bytes (SAM spec §4.2.4): from the typed `tags` struct, and from
//! `tags_extra`'s SAM text.
//!
//! Each value is checked as SAM's grammar (§1.5) defines its type, so a written file holds
//! nothing samtools would reject; an integer gets the width its field's [`IntWidth`] rule gives.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{Float32Type, Int64Type};

use crate::schema::{IntWidth, TagKind, TagName};

/// Writes the tag `name` of `kind`: its name, type and the value of `column` at `row` (not null).
pub fn write_struct_field(
    out: &mut Vec<u8>,
    name: TagName,
    kind: TagKind,
    column: &ArrayRef,
    row: usize,
) -> Result<(), String> {
    let tag = String::from_utf8_lossy(&name);
    out.extend(name);
    match kind {
        TagKind::Char | TagKind::String | TagKind::Hex => {
            let value = column.as_string::<i32>().value(row);
            write_text(out, kind, value.as_bytes()).map_err(|what| format!("tag {tag} {what}"))?;
        }
        TagKind::Int(width) => {
            let value = column.as_primitive::<Int64Type>().value(row);
            write_int(out, width, value).map_err(|what| format!("tag {tag} {what}"))?;
        }
        TagKind::Float => {
            out.push(b'f');
            out.extend(column.as_primitive::<Float32Type>().value(row).to_le_bytes());
        }
        TagKind::IntArray(subtype) => {
            let items = column.as_list::<i32>().value(row);
            if items.null_count() > 0 {
                return Err(format!("tag {tag} is an array with a null item"));
            }
            let values = items.as_primitive::<Int64Type>().values();
            write_int_array(out, subtype, values.iter().copied()).map_err(|what| format!("tag {tag} {what}"))?;
        }
        TagKind::FloatArray => {
            let items = column.as_list::<i32>().value(row);
            if items.null_count() > 0 {
                return Err(format!("tag {tag} is an array with a null item"));
            }
            let values = items.as_primitive::<Float32Type>().values();
            write_array_header(out, b'f', values.len())?;
            values.iter().for_each(|v| out.extend(v.to_le_bytes()));
        }
    }
    Ok(())
}

/// Writes the tab-separated SAM fields of `tags_extra` (`TAG:TYPE:VALUE`). Integers get htslib's
/// width, as samtools gives the same text.
pub fn write_sam_fields(out: &mut Vec<u8>, text: &str) -> Result<(), String> {
    for field in text.split('\t').filter(|f| !f.is_empty()) {
        write_sam_field(out, field).map_err(|what| format!("tags_extra field {field:?} {what}"))?;
    }
    Ok(())
}

fn write_sam_field(out: &mut Vec<u8>, field: &str) -> Result<(), String> {
    let (name, ty, value) = match field.as_bytes() {
        [a, b, b':', ty, b':', value @ ..] => ([*a, *b], *ty, value),
        _ => return Err("is not TAG:TYPE:VALUE".into()),
    };
    // Looser than the specification's `[A-Za-z][A-Za-z0-9]`, as htslib is: the table shows such
    // fields of a file here, and they are written back.
    if !name.iter().all(u8::is_ascii_graphic) {
        return Err("has a tag name that is not two printable characters".into());
    }
    out.extend(name);
    let text = std::str::from_utf8(value).map_err(|_| "is not ASCII".to_string())?;
    match ty {
        b'A' => write_text(out, TagKind::Char, value),
        b'Z' => write_text(out, TagKind::String, value),
        b'H' => write_text(out, TagKind::Hex, value),
        b'i' => match text.parse::<i64>() {
            Ok(n) => write_int(out, IntWidth::Smallest, n),
            Err(_) => Err("is not an integer".into()),
        },
        b'f' => match text.parse::<f32>() {
            Ok(x) => {
                out.push(b'f');
                out.extend(x.to_le_bytes());
                Ok(())
            }
            Err(_) => Err("is not a number".into()),
        },
        b'B' => {
            let mut items = text.split(',');
            let subtype = match items.next().map(str::as_bytes) {
                Some(&[subtype]) => subtype,
                _ => return Err("has no array subtype".into()),
            };
            if subtype == b'f' {
                let values: Vec<f32> =
                    items.map(str::parse).collect::<Result<_, _>>().map_err(|_| "holds a non-number")?;
                write_array_header(out, b'f', values.len())?;
                values.iter().for_each(|v| out.extend(v.to_le_bytes()));
                Ok(())
            } else {
                let values: Vec<i64> =
                    items.map(str::parse).collect::<Result<_, _>>().map_err(|_| "holds a non-integer")?;
                write_int_array(out, subtype, values.into_iter())
            }
        }
        _ => Err(format!("has type {:?}, not one of A, i, f, Z, H, B", char::from(ty))),
    }
}

/// Writes the type and value of a text field: `A` one printable character, `Z` printable text
/// with spaces, `H` pairs of hex digits; the last two NUL-terminated.
fn write_text(out: &mut Vec<u8>, kind: TagKind, value: &[u8]) -> Result<(), String> {
    match kind {
        TagKind::Char => match value {
            &[c] if c.is_ascii_graphic() => {
                out.extend([b'A', c]);
                Ok(())
            }
            _ => Err(format!("of type A holds {:?}, not one printable character", String::from_utf8_lossy(value))),
        },
        TagKind::Hex if !value.len().is_multiple_of(2) || !value.iter().all(u8::is_ascii_hexdigit) => {
            Err("of type H is not pairs of hex digits".into())
        }
        TagKind::String if !value.iter().all(|c| matches!(c, b' '..=b'~')) => {
            Err("of type Z holds a character that is not printable ASCII".into())
        }
        _ => {
            out.push(if kind == TagKind::Hex { b'H' } else { b'Z' });
            out.extend(value);
            out.push(0);
            Ok(())
        }
    }
}

/// Writes an integer's type letter, as `width` picks it, and its bytes.
fn write_int(out: &mut Vec<u8>, width: IntWidth, value: i64) -> Result<(), String> {
    let letter = width.type_of(value).ok_or_else(|| format!("value {value} does not fit a BAM integer"))?;
    out.push(letter);
    write_int_value(out, letter, value);
    Ok(())
}

/// Writes a `B` array of integers of `subtype`, each checked against the subtype's range.
fn write_int_array(out: &mut Vec<u8>, subtype: u8, values: impl ExactSizeIterator<Item = i64>) -> Result<(), String> {
    write_array_header(out, subtype, values.len())?;
    for value in values {
        if IntWidth::Fixed(subtype).type_of(value) != Some(subtype) {
            return Err(format!("holds {value}, which a B:{} array cannot", char::from(subtype)));
        }
        write_int_value(out, subtype, value);
    }
    Ok(())
}

fn write_array_header(out: &mut Vec<u8>, subtype: u8, len: usize) -> Result<(), String> {
    if !b"cCsSiIf".contains(&subtype) {
        return Err(format!("has array subtype {:?}, not one of c, C, s, S, i, I, f", char::from(subtype)));
    }
    let len = u32::try_from(len).map_err(|_| format!("has {len} items, more than BAM allows"))?;
    out.extend([b'B', subtype]);
    out.extend(len.to_le_bytes());
    Ok(())
}

/// The little-endian bytes of `value` as BAM integer type `letter`; the caller checked the range.
fn write_int_value(out: &mut Vec<u8>, letter: u8, value: i64) {
    match letter {
        b'c' | b'C' => out.push(value as u8),
        b's' | b'S' => out.extend((value as u16).to_le_bytes()),
        _ => out.extend((value as u32).to_le_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extra(text: &str) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        write_sam_fields(&mut out, text).map(|()| out)
    }

    #[test]
    fn sam_fields_become_bam_bytes() {
        assert_eq!(extra("NM:i:0").unwrap(), b"NMC\x00");
        assert_eq!(extra("XS:i:-200\tXT:A:U").unwrap(), b"XSs\x38\xffXTAU");
        assert_eq!(extra("XZ:Z:a b\tXH:H:\tXh:H:0aFF").unwrap(), b"XZZa b\x00XHH\x00XhH0aFF\x00");
        assert_eq!(extra("XB:B:c").unwrap(), b"XBBc\x00\x00\x00\x00");
        assert_eq!(extra("XB:B:S,1,65535").unwrap(), b"XBBS\x02\x00\x00\x00\x01\x00\xff\xff");
        assert_eq!(extra("XF:f:1.5").unwrap(), [b"XFf".as_slice(), &1.5f32.to_le_bytes()].concat());
        assert_eq!(extra("").unwrap(), b"");
    }

    #[test]
    fn bad_sam_fields_are_refused_with_the_reason() {
        for (text, reason) in [
            ("NM", "is not TAG:TYPE:VALUE"),
            ("N :i:1", "not two printable characters"),
            ("NM:i:x", "not an integer"),
            ("NM:i:4294967296", "does not fit a BAM integer"),
            ("XA:A:ab", "not one printable character"),
            ("XH:H:ABC", "not pairs of hex digits"),
            ("XB:B:C,256", "which a B:C array cannot"),
            ("XB:B:q,1", "array subtype 'q'"),
            ("XB:B", "is not TAG:TYPE:VALUE"),
            ("XQ:Q:1", "not one of A, i, f, Z, H, B"),
        ] {
            let error = extra(text).unwrap_err();
            assert!(error.contains(reason), "{text}: {error}");
        }
    }
}

//! `MD` and `NM` computed against the reference, for CRAM records that lack them.
//!
//! CRAM writers (htslib by default) drop `MD` and `NM` when the reference can give them back, and
//! htslib's reader puts them back for every mapped read of a reference-based slice (its
//! `decode_md` option, on by default), so `samtools view` shows them. noodles-cram 0.102 does
//! not, so this module does, the way htslib does: `M`, `=` and `X` compare bases (case-blind; a
//! read base `=` is compared as a letter, as htslib does),
//! `D` writes `^` and the deleted reference bases, `NM` counts mismatches, inserted and deleted
//! bases.

use crate::record::{cigar_op, cigar_ops, RawRecord, FLAG_UNMAPPED, SEQ_CODES};
use crate::schema::IntWidth;

/// The `MD` string and `NM` value of `record` against `reference` (the whole reference sequence
/// it is aligned to), or `None` when they cannot be computed: unmapped, no sequence, no CIGAR, or
/// a CIGAR running past the reference.
pub fn md_and_nm(record: &RawRecord<'_>, reference: &[u8]) -> Option<(String, i64)> {
    let cigar = record.cigar_bytes();
    if record.flag() & FLAG_UNMAPPED != 0 || record.l_seq() == 0 || cigar.is_empty() || record.pos() < 0 {
        return None;
    }
    let seq = record.seq_bytes();
    let base = |i: usize| SEQ_CODES[usize::from(if i.is_multiple_of(2) { seq[i / 2] >> 4 } else { seq[i / 2] & 0xf })];
    let (mut md, mut nm, mut run) = (String::new(), 0i64, 0u64);
    let (mut at, mut read) = (record.pos() as usize, 0usize);
    for (len, op) in cigar_ops(cigar) {
        let len = len as usize;
        match op {
            cigar_op::MATCH | cigar_op::SEQ_MATCH | cigar_op::SEQ_MISMATCH => {
                let bases = reference.get(at..at + len)?;
                for (i, &r) in bases.iter().enumerate() {
                    let (r, q) = (r.to_ascii_uppercase(), base(read + i));
                    if q == r {
                        run += 1;
                    } else {
                        md.push_str(&run.to_string());
                        md.push(char::from(r));
                        (run, nm) = (0, nm + 1);
                    }
                }
                (at, read) = (at + len, read + len);
            }
            cigar_op::INSERTION => (read, nm) = (read + len, nm + len as i64),
            cigar_op::SOFT_CLIP => read += len,
            cigar_op::DELETION => {
                let bases = reference.get(at..at + len)?;
                md.push_str(&run.to_string());
                md.push('^');
                md.extend(bases.iter().map(|b| char::from(b.to_ascii_uppercase())));
                (run, at, nm) = (0, at + len, nm + len as i64);
            }
            cigar_op::SKIP => at += len,
            _ => {}
        }
    }
    if read > record.l_seq() {
        return None;
    }
    md.push_str(&run.to_string());
    Some((md, nm))
}

/// Appends the aux fields `MD:Z` and `NM` (an integer) that the BAM record (without its `block_size`) at
/// the end of `data`, from byte `from`, lacks, computed against `reference`.
pub fn append_md_nm(data: &mut Vec<u8>, from: usize, n_ref: usize, reference: &[u8]) {
    let Ok(record) = RawRecord::parse(&data[from..], n_ref) else { return };
    let (mut has_md, mut has_nm) = (false, false);
    for field in record.aux() {
        match field {
            Ok(f) if &f.tag == b"MD" => has_md = true,
            Ok(f) if &f.tag == b"NM" => has_nm = true,
            // The real CIGAR of a long alignment is in CG: left alone.
            Ok(f) if &f.tag == b"CG" => return,
            Ok(_) => {}
            Err(_) => return,
        }
    }
    if has_md && has_nm {
        return;
    }
    let Some((md, nm)) = md_and_nm(&record, reference) else { return };
    if !has_md {
        data.extend_from_slice(b"MDZ");
        data.extend_from_slice(md.as_bytes());
        data.push(0);
    }
    // The smallest type, as htslib's CRAM decoder writes it (`NM:C` below 256).
    if let Some(letter) = (!has_nm).then(|| IntWidth::Smallest.type_of(nm)).flatten() {
        data.extend([b'N', b'M', letter]);
        match letter {
            b'C' => data.push(nm as u8),
            b'S' => data.extend((nm as u16).to_le_bytes()),
            _ => data.extend((nm as u32).to_le_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::test_support::record_bytes;

    /// A record at 0-based `pos` with `cigar` (BAM-encoded ops) and `bases`.
    fn record(pos: i32, cigar: &[u32], bases: &[u8]) -> Vec<u8> {
        let mut bytes = record_bytes(b"r", cigar, bases.len(), &[]);
        bytes[4..8].copy_from_slice(&pos.to_le_bytes());
        let code = |b: u8| SEQ_CODES.iter().position(|&c| c == b).unwrap() as u8;
        let seq_at = 32 + 2 + cigar.len() * 4;
        for (i, pair) in bases.chunks(2).enumerate() {
            bytes[seq_at + i] = code(pair[0]) << 4 | pair.get(1).map_or(0, |&b| code(b));
        }
        bytes
    }

    fn op(len: u32, op: u8) -> u32 {
        len << 4 | u32::from(op)
    }

    #[test]
    fn md_and_nm_follow_the_spec_examples() {
        let reference = b"ACGTACGTACGTACGT";
        // After the clip: ACGTT against ACGTA (the fifth base differs), G inserted, CG deleted,
        // then TAC matching.
        let cigar = [
            op(1, cigar_op::SOFT_CLIP),
            op(5, cigar_op::MATCH),
            op(1, cigar_op::INSERTION),
            op(2, cigar_op::DELETION),
            op(3, cigar_op::MATCH),
        ];
        let bytes = record(0, &cigar, b"NACGTTGTAC");
        let r = RawRecord::parse(&bytes, 1).unwrap();
        assert_eq!(md_and_nm(&r, reference), Some(("4A0^CG3".to_string(), 4)));
        // Appended once, as MD:Z and NM:C; a record that has both is left as it is.
        let mut with = [b"earlier".as_slice(), &bytes].concat();
        append_md_nm(&mut with, 7, 1, reference);
        assert_eq!(&with[7 + bytes.len()..], b"MDZ4A0^CG3\0NMC\x04");
        let before = with.clone();
        append_md_nm(&mut with, 7, 1, reference);
        assert_eq!(with, before);
    }

    #[test]
    fn matches_and_skips() {
        let reference = b"acgtACGTACGT";
        let bytes = record(2, &[op(2, cigar_op::MATCH), op(4, cigar_op::SKIP), op(2, cigar_op::SEQ_MATCH)], b"GTAC");
        let r = RawRecord::parse(&bytes, 1).unwrap();
        assert_eq!(md_and_nm(&r, reference), Some(("4".to_string(), 0)));
        let past_the_end = record(10, &[op(4, cigar_op::MATCH)], b"ACGT");
        assert_eq!(md_and_nm(&RawRecord::parse(&past_the_end, 1).unwrap(), reference), None);
    }
}

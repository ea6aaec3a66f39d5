//! The SAM header text of BAM and SAM files, parsed by noodles line by line, with htslib's
//! leniency for comment lines.
//!
//! noodles 0.93 (`header/parser/record.rs`) refuses an `@CO` line without a tab after its tag,
//! such as a bare `@CO`, which htslib reads as an empty comment and its own test files hold.

use std::io::{self, BufRead, Read};

use noodles_sam as sam;

/// An `@CO` line's tag.
const COMMENT: &[u8] = b"@CO";

/// Parses header lines (each without its line break) into a header.
fn parse_header_lines<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> io::Result<sam::Header> {
    let mut parser = sam::header::Parser::default();
    let mut comment = Vec::new();
    for (n, line) in lines.into_iter().enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // htslib reads header text as a C string, so a NUL ends it there, and the header is
        // refused or cut; no SAM field holds one.
        if line.contains(&0) {
            let message = format!("header line {} holds a NUL byte", n + 1);
            return Err(io::Error::new(io::ErrorKind::InvalidData, message));
        }
        let parsed = match line.strip_prefix(COMMENT) {
            // A comment's text starts after a tab; a bare `@CO`, or one followed by spaces, is
            // one of no text, or of the text after the spaces.
            Some(rest) if !rest.starts_with(b"\t") => {
                comment.clear();
                comment.extend_from_slice(COMMENT);
                comment.push(b'\t');
                comment.extend_from_slice(rest.trim_ascii_start());
                parser.parse_partial(&comment)
            }
            _ => parser.parse_partial(line),
        };
        parsed.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    }
    Ok(parser.finish())
}

/// Reads a BAM header (from its magic number to its binary reference list) as noodles'
/// `bam::io::Reader::read_header` does, with the comment leniency above.
pub fn read_bam_header<R: io::Read>(reader: &mut noodles_bam::io::Reader<R>) -> io::Result<sam::Header> {
    let mut header_reader = reader.header_reader();
    if header_reader.read_magic_number()? != *b"BAM\x01" {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "invalid BAM header"));
    }
    let mut text = Vec::new();
    {
        let mut raw = header_reader.raw_sam_header_reader()?;
        raw.read_to_end(&mut text)?;
        raw.discard_to_end()?;
    }
    // The text may be NUL-padded (§4.2: `l_text` may include trailing NULs).
    let text = text.split(|&b| b == 0).next().unwrap_or_default();
    let mut header = read_header_text(text)?;
    let binary = header_reader.read_reference_sequences()?;
    let text_refs = std::mem::take(header.reference_sequences_mut());
    *header.reference_sequences_mut() = reconcile_references(binary, text_refs);
    Ok(header)
}

/// The reference dictionary of a BAM file whose binary list is `binary` and whose text's `@SQ`
/// lines are `text`, as htslib makes it (`sam_hrecs_refs_from_targets_array`, then the text, in
/// `header.c`): records index the binary list, so its names, order and lengths hold, each with
/// the other fields of the text line of its name; text lines of other names follow.
fn reconcile_references(
    binary: sam::header::ReferenceSequences,
    mut text: sam::header::ReferenceSequences,
) -> sam::header::ReferenceSequences {
    let mut references: sam::header::ReferenceSequences = binary
        .into_iter()
        .map(|(name, from_binary)| match text.shift_remove(&name) {
            Some(mut from_text) => {
                *from_text.length_mut() = from_binary.length();
                (name, from_text)
            }
            None => (name, from_binary),
        })
        .collect();
    for (name, from_text) in text {
        references.entry(name).or_insert(from_text);
    }
    references
}

/// Reads all of `reader`'s header lines into one header, for SAM text.
pub fn read_header_text(mut reader: impl BufRead) -> io::Result<sam::Header> {
    let mut text = Vec::new();
    reader.read_to_end(&mut text)?;
    parse_header_lines(text.split(|&b| b == b'\n').filter(|l| !l.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binary list decides names, order and lengths; the text adds fields and names.
    #[test]
    fn binary_references_win_over_the_text_as_in_htslib() {
        let text = read_header_text(
            "@SQ\tSN:b\tLN:7\tM5:0123456789abcdef0123456789abcdef\n@SQ\tSN:a\tLN:5\n@SQ\tSN:t\tLN:3\n".as_bytes(),
        )
        .unwrap();
        let binary = read_header_text("@SQ\tSN:a\tLN:5\n@SQ\tSN:b\tLN:9\n@SQ\tSN:c\tLN:2\n".as_bytes()).unwrap();
        let references = reconcile_references(binary.reference_sequences().clone(), text.reference_sequences().clone());
        let listed: Vec<(String, usize, usize)> = references
            .iter()
            .map(|(name, map)| (name.to_string(), map.length().get(), map.other_fields().len()))
            .collect();
        let expected = [("a", 5, 0), ("b", 9, 1), ("c", 2, 0), ("t", 3, 0)].map(|(n, l, f)| (n.to_string(), l, f));
        assert_eq!(listed, expected);
    }

    #[test]
    fn bare_comment_lines_are_empty_comments() {
        let text = "@HD\tVN:1.6\n@CO\n@CO   spaced\n@CO\tplain\n@SQ\tSN:c\tLN:9\n";
        let header = read_header_text(text.as_bytes()).unwrap();
        let comments: Vec<String> = header.comments().iter().map(|c| c.to_string()).collect();
        assert_eq!(comments, ["", "spaced", "plain"]);
        assert_eq!(header.reference_sequences().len(), 1);
        assert!(read_header_text("@SQ\tSN:c\n".as_bytes()).is_err(), "other lines are checked as before");
        let e = read_header_text("@HD\tVN:1.6\n@SQ\tSN:c\0d\tLN:9\n".as_bytes()).unwrap_err();
        assert!(e.to_string().contains("header line 2 holds a NUL byte"), "{e}");
    }
}

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
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
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
    let refs = header.reference_sequences();
    if refs.is_empty() {
        *header.reference_sequences_mut() = binary;
    } else if refs.len() != binary.len()
        || refs.iter().zip(&binary).any(|((a, a_map), (b, b_map))| a != b || a_map.length() != b_map.length())
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "SAM header and binary reference sequence dictionaries mismatch",
        ));
    }
    Ok(header)
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

    #[test]
    fn bare_comment_lines_are_empty_comments() {
        let text = "@HD\tVN:1.6\n@CO\n@CO   spaced\n@CO\tplain\n@SQ\tSN:c\tLN:9\n";
        let header = read_header_text(text.as_bytes()).unwrap();
        let comments: Vec<String> = header.comments().iter().map(|c| c.to_string()).collect();
        assert_eq!(comments, ["", "spaced", "plain"]);
        assert_eq!(header.reference_sequences().len(), 1);
        assert!(read_header_text("@SQ\tSN:c\n".as_bytes()).is_err(), "other lines are checked as before");
    }
}

//! SAM text files, plain or BGZF-compressed (`.sam.gz`): lines, the header and index, and the
//! records of a range.

pub mod info;
pub mod lines;
pub mod records;

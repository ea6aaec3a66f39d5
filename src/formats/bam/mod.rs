//! BAM files: the header and index facts, byte-range planning, and the records of a range.

pub mod info;
pub mod partition;
pub mod records;

//! CRAM files: the header and `.crai`, the container reader, and the records of a range.

pub mod container;
pub mod head;
#[cfg(feature = "htslib")]
pub mod htslib;
pub mod info;
pub mod records;

//! Table functions: `bam_header(path)` and `bam_region(path, region, ...)`.

pub mod header;
pub mod region;

//! BGZF files (BAM and `.sam.gz`): the header, record framing after it, finding a record start
//! without an index (resync), `.bai`/`.csi`/`.tbi` indexes, and the pieces of a file a scan reads.

pub mod framing;
pub mod header;
pub mod index;
pub mod pieces;
pub mod resync;

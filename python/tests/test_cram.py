"""CRAM and SAM from Python: `STORED AS CRAM`/`SAM` in SQL and the helpers on such paths, against
samtools."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datafusion import SessionContext
from oracle import DATA, samtools_count
from oracle import sql_count as count

import datafusion_bam as bam

CRAM = DATA / "cram" / "bwa_mem.cram"
REFERENCE = DATA / "cram" / "ref.fa"


def test_stored_as_cram_in_sql() -> None:
    ctx = SessionContext()
    bam.enable(ctx)
    ctx.sql(f"CREATE EXTERNAL TABLE reads STORED AS CRAM LOCATION '{CRAM}' OPTIONS ('reference' '{REFERENCE}')")
    assert count(ctx, "SELECT count(*) FROM reads") == samtools_count("-T", str(REFERENCE), str(CRAM))
    region = "rname = 'chr1' AND pos <= 30000 AND endpos >= 20000 AND mapq >= 30"
    expected = samtools_count("-T", str(REFERENCE), "-q", "30", str(CRAM), "chr1:20000-30000")
    assert count(ctx, f"SELECT count(*) FROM reads WHERE {region}") == expected
    # MD and NM, which the CRAM does not store, come back as samtools shows them.
    nm = count(ctx, "SELECT count(*) FROM reads WHERE tags['NM'] IS NOT NULL")
    assert nm == samtools_count("-T", str(REFERENCE), "-F", "4", str(CRAM))


def test_helpers_read_cram_paths(tmp_path: Path) -> None:
    out = tmp_path / "q30.parquet"
    rows = bam.write_parquet(str(CRAM), str(out), min_mapq=30, reference=REFERENCE)
    assert rows == samtools_count("-T", str(REFERENCE), "-q", "30", str(CRAM))
    assert pq.read_table(out).num_rows == rows
    t = bam.table(str(CRAM), reference=str(REFERENCE))
    ctx = SessionContext()
    ctx.register_table("t", t)
    assert count(ctx, "SELECT count(seq) FROM t") == samtools_count("-T", str(REFERENCE), str(CRAM))


def test_convert_each_names_cram_and_sam_outputs(tmp_path: Path) -> None:
    sam = DATA / "sam" / "hand_corners.sam"
    done = bam.convert_each([CRAM, sam], tmp_path, reference=REFERENCE)
    assert done == {str(CRAM): samtools_count("-T", str(REFERENCE), str(CRAM)), str(sam): samtools_count(str(sam))}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bwa_mem.parquet", "hand_corners.parquet"]


def test_a_missing_reference_raises_bam_error() -> None:
    ctx = SessionContext()
    with pytest.raises(bam.BamError, match="reference sequence chr1"):
        ctx.register_table("t", bam.table(str(CRAM)))


def test_sam_in_sql_and_helpers(tmp_path: Path) -> None:
    sam = DATA / "sam" / "bwa_mem.sam"
    ctx = SessionContext()
    bam.enable(ctx)
    ctx.sql(f"CREATE EXTERNAL TABLE reads STORED AS SAM LOCATION '{sam}'")
    assert count(ctx, "SELECT count(*) FROM reads WHERE mapq >= 30") == samtools_count("-q", "30", str(sam))
    gz = DATA / "sam" / "long_reads.sam.gz"
    rows = bam.write_ipc(str(gz), str(tmp_path / "long.arrow"))
    assert rows == samtools_count(str(gz))

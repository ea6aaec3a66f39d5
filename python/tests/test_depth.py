"""`bam.depth` against `samtools depth -aa` and against SQL's `bam_depth`.

Run by `cargo test` (python/tests/pytest.rs), which builds the extension first.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from datafusion import SessionConfig, SessionContext, col
from oracle import SAMPLE, samtools

import datafusion_bam as bam


def _runs_of_samtools(path: str, *extra: str) -> list[tuple[str, int, int, int]]:
    runs: list[list] = []
    for line in samtools("depth", "-aa", *extra, path).splitlines():
        rname, pos, depth = line.split("\t")
        p, d = int(pos), int(depth)
        if runs and runs[-1][0] == rname and runs[-1][3] == d and runs[-1][2] + 1 == p:
            runs[-1][2] = p
        else:
            runs.append([rname, p, p, d])
    return [tuple(r) for r in runs]


def _runs(df) -> list[tuple[str, int, int, int]]:
    t = df.to_pydict()
    rows = zip(t["rname"], t["start"], t["end"], t["depth"])
    order = {n: i for i, n in enumerate(dict.fromkeys(_runs_of_samtools_names()))}
    return sorted(rows, key=lambda r: (order[r[0]], r[1]))


def _runs_of_samtools_names() -> list[str]:
    return [l.split("\t")[1][3:] for l in samtools("view", "-H", SAMPLE).splitlines() if l.startswith("@SQ")]


def test_depth_in_samtools_mode_equals_samtools_depth(tmp_path: Path) -> None:
    path = tmp_path / "sample.bam"
    shutil.copy(SAMPLE, path)
    samtools("index", str(path))
    got = _runs(bam.depth(path, mode="samtools", min_mapq=20))
    assert got == _runs_of_samtools(str(path), "-Q", "20")


def test_depth_without_an_index_equals_samtools_depth(tmp_path: Path) -> None:
    # Counted in byte ranges (any file size splits here), whose edges are merged.
    path = tmp_path / "unindexed.bam"
    shutil.copy(SAMPLE, path)
    config = SessionConfig().with_target_partitions(3).set("datafusion.optimizer.repartition_file_min_size", "0")
    got = _runs(bam.depth(path, ctx=SessionContext(config), mode="samtools", max_span=1000))
    assert got == _runs_of_samtools(SAMPLE)


def test_depth_windows_and_the_sql_function_agree() -> None:
    # Pieces are counted in parallel: rows come in any order.
    df = bam.depth(SAMPLE, "chr1:1-50000", window=10000, thresholds=[1, 10]).sort(col("start").sort())
    t = df.to_pydict()
    assert t["start"] == [1, 10001, 20001, 30001, 40001]
    assert list(t) == ["rname", "start", "end", "mean", "at_least_1", "at_least_10"]
    ctx = SessionContext()
    bam.enable(ctx)
    sql = ctx.sql(f"SELECT * FROM bam_depth('{SAMPLE}', 'chr1:1-50000', 'window=10000 thresholds=1,10') ORDER BY start")
    assert sql.to_pydict() == t


def test_depth_errors_name_what_was_wrong() -> None:
    # Through datafusion-python's SQL the error arrives as its exception, with the message.
    with pytest.raises(Exception, match="option mode"):
        bam.depth(SAMPLE, mode="bedtools").collect()
    with pytest.raises(Exception, match="option max_span"):
        bam.depth(SAMPLE, max_span=0).collect()
    with pytest.raises(bam.InvalidOptionError, match="white space"):
        bam.depth(SAMPLE, regions="my targets.bed")
    with pytest.raises(Exception, match="no/such/file.bam"):
        bam.depth("no/such/file.bam").collect()

"""What the Python tests compare against: samtools on the repository's test data."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from datafusion import SessionContext

REPO = Path(os.environ.get("DATAFUSION_BAM_REPO", Path(__file__).resolve().parents[2]))
DATA = REPO / "tests" / "data"
SAMPLE = str(DATA / "sample.bam")


def samtools(*args: str) -> str:
    return subprocess.run(["samtools", *args], check=True, capture_output=True, text=True).stdout


def samtools_count(*args: str) -> int:
    return int(samtools("view", "-c", *args))


def sql_count(ctx: SessionContext, sql: str) -> int:
    """The single value of a query such as ``SELECT count(*) ...``."""
    return ctx.sql(sql).to_arrow_table().column(0)[0].as_py()


def sam_records(path: str | os.PathLike[str], *args: str) -> list[str]:
    """``samtools view path args...``: each record's eleven fields and its aux fields sorted (a
    record's tags are a set), the records sorted."""
    out = []
    for line in samtools("view", str(path), *args).splitlines():
        fields = line.split("\t")
        out.append("\t".join(fields[:11] + sorted(fields[11:])))
    return sorted(out)

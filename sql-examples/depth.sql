-- Read depth as mosdepth counts it: runs of equal depth (1-based, inclusive), written to Parquet
-- and to a bedGraph; then mosdepth's summary.txt (length, bases, mean, min, max per reference)
-- as one query over the runs.
-- Run from the repository root: datafusion-bam -f sql-examples/depth.sql
COPY (SELECT * FROM bam_depth('tests/data/sample.bam')) TO 'depth.parquet' STORED AS PARQUET;
COPY (SELECT rname, start - 1 AS start, "end", depth FROM bam_depth('tests/data/sample.bam') ORDER BY rname, start)
TO 'depth.bedgraph' STORED AS CSV OPTIONS ('format.delimiter' E'\t', 'format.has_header' 'false');
SELECT rname AS chrom,
       max("end") AS length,
       sum(("end" - start + 1) * depth) AS bases,
       CAST(sum(("end" - start + 1) * depth) AS DOUBLE) / max("end") AS mean,
       min(depth) AS min,
       max(depth) AS max
FROM bam_depth('tests/data/sample.bam')
GROUP BY rname
ORDER BY chrom;
-- The mean depth per 10 kb window, and the bases covered at least 1x, 10x and 20x.
SELECT * FROM bam_depth('tests/data/sample.bam', 'chr1:1-50000', 'window=10000 thresholds=1,10,20');

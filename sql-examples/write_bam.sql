-- Filter reads back into BAM, coordinate-sorted (SO:coordinate) and indexed (q30.bam.bai).
-- Run from the repository root: datafusion-bam -f sql-examples/write_bam.sql
CREATE EXTERNAL TABLE reads STORED AS BAM LOCATION 'tests/data/sample.bam';
COPY (SELECT * FROM reads WHERE mapq >= 30 AND flag & 1024 = 0 ORDER BY rname, pos)
  TO 'q30.bam' STORED AS BAM OPTIONS ('index' 'bai');
CREATE EXTERNAL TABLE q30 STORED AS BAM LOCATION 'q30.bam';
SELECT count(*) AS records FROM q30;

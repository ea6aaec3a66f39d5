-- Keep confidently mapped, non-duplicate primary alignments; write a few columns as Arrow IPC.
CREATE EXTERNAL TABLE reads STORED AS BAM LOCATION 'tests/data/sample.bam';
COPY (
  SELECT qname, rname, pos, mapq, cigar, tags['NM'] AS nm
  FROM reads
  WHERE mapq >= 30 AND (flag & 4) = 0 AND (flag & 256) = 0 AND (flag & 1024) = 0 AND (flag & 2048) = 0
) TO 'filtered.arrow' STORED AS ARROW;
SELECT count(*) AS records FROM 'filtered.arrow';

-- A CRAM file (compressed against the reference FASTA) as the same table as a BAM: q30 reads
-- converted to Parquet, and written back as BAM.
CREATE EXTERNAL TABLE reads STORED AS CRAM LOCATION 'tests/data/cram/bwa_mem.cram'
OPTIONS ('reference' 'tests/data/cram/ref.fa');
COPY (SELECT * FROM reads WHERE mapq >= 30) TO 'bwa_mem_q30.parquet' STORED AS PARQUET;
COPY (SELECT * FROM reads WHERE mapq >= 30) TO 'bwa_mem_q30.bam' STORED AS BAM;
SELECT count(*) AS records FROM 'bwa_mem_q30.parquet';

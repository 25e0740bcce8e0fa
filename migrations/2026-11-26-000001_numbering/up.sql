-- Human-readable numbers: INVCS0001001 for cases, INVCSL0001001 for lines.
-- Sequences never hand out a value twice; a rolled-back action leaves a gap,
-- which numbering allows (numbers are unique and increasing, not dense).
CREATE SEQUENCE invoice_case_number_seq AS bigint START WITH 1001 MINVALUE 1;
CREATE SEQUENCE case_line_number_seq AS bigint START WITH 1001 MINVALUE 1;

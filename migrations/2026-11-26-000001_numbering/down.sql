DROP SEQUENCE case_line_number_seq;
DROP SEQUENCE invoice_case_number_seq;

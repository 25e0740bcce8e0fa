DROP TABLE case_lines;
DROP TABLE invoice_cases;

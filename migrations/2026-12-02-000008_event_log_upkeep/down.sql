ALTER TABLE case_events ADD CONSTRAINT case_events_case_id_fkey
    FOREIGN KEY (case_id) REFERENCES invoice_cases (id);
CREATE INDEX case_events_occur_time_idx ON case_events (occur_time);

DROP TABLE case_events;

-- Two fewer writes per action on the event log:
--
--  * Events are pruned as a prefix of the stream order, walking the
--    (txid, id) index in bounded batches (src/store/event_log.rs), so the
--    index on occur_time only cost every insert.
--  * An event's case is the row its own statement wrote (the statement
--    takes the case id from that row), and cases are never deleted: the
--    foreign key only added a lookup and a row lock to every action.
DROP INDEX case_events_occur_time_idx;
ALTER TABLE case_events DROP CONSTRAINT case_events_case_id_fkey;

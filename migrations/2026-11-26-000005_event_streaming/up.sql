-- What WatchStateChanges needs of the event log.
--
-- Streams read events in (txid, id) order, and only below the oldest
-- transaction still running (pg_snapshot_xmin): a transaction below it has
-- ended, so no event can still appear before a cursor a stream has passed.
-- Two locks make that order right:
--
--  * every event writer takes, before its transaction has an id, an
--    exclusive lock on its case: two actions on one case then get
--    transaction ids in the order they commit, so (txid, id) order is commit
--    order for any one case;
--  * every event writer holds a shared "event writer" lock until it commits;
--    a with_snapshot watch takes it exclusively for an instant, so that its
--    snapshot sees no event writer in flight and "every event with a txid
--    below the snapshot's xmax" is exactly what the snapshot shows.
CREATE FUNCTION lock_for_event(case_id uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    -- 470441473 / 470441472: this service's advisory lock namespaces.
    PERFORM pg_advisory_xact_lock_shared(470441473, 0);
    IF case_id IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(470441472, hashtext(case_id::text));
    END IF;
    RETURN true;
END
$$;

-- A wake-up hint for watch readers (payloads are lost when no one listens;
-- readers also poll).
CREATE FUNCTION notify_case_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('invoice_case_events', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER case_events_notify
    AFTER INSERT ON case_events
    FOR EACH STATEMENT EXECUTE FUNCTION notify_case_events();

-- How far the event log has been pruned: every event at or before this
-- position is gone, so a cursor before it cannot be resumed.
CREATE TABLE case_event_retention (
    singleton           boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_through_txid bigint NOT NULL DEFAULT 0,
    pruned_through_id   bigint NOT NULL DEFAULT 0
);
INSERT INTO case_event_retention DEFAULT VALUES;

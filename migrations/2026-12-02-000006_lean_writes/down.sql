DROP INDEX invoice_cases_priority_idx;
DROP INDEX invoice_cases_assigned_to_idx;
CREATE INDEX invoice_cases_assigned_to_idx ON invoice_cases (assigned_to, create_time DESC, id DESC)
    WHERE assigned_to IS NOT NULL;

CREATE OR REPLACE FUNCTION lock_for_event(case_id uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(470441473, 0);
    IF case_id IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(470441472, hashtext(case_id::text));
    END IF;
    RETURN true;
END
$$;

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

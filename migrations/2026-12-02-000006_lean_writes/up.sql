-- Leaner writes (see src/store/write.rs):
--
--  * Event writers no longer notify from a trigger. A NOTIFY makes every
--    committing transaction take one server-wide lock in turn until its
--    commit is flushed, which undoes group commit. The service wakes its own
--    watch reader in process, and notifies (in the action's statement) only
--    while another replica has subscribers (see src/watch/presence.rs).
--  * Event writers no longer take the shared "event writer" lock: snapshots
--    and "from now" positions are exact without it (a stream skips the
--    events its snapshot already shows, see src/watch/cursor.rs).
--    lock_for_event keeps the one lock that orders one case's transactions,
--    for writers outside the service.
--  * ListInvoiceCases: an index for every filterable field that also
--    serves the newest-first order.
DROP TRIGGER case_events_notify ON case_events;
DROP FUNCTION notify_case_events();

CREATE OR REPLACE FUNCTION lock_for_event(case_id uuid) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT pg_advisory_xact_lock(470441472, hashtext(case_id::text)) IS NULL OR true
$$;

DROP INDEX invoice_cases_assigned_to_idx;
CREATE INDEX invoice_cases_assigned_to_idx ON invoice_cases (assigned_to, create_time DESC, id DESC);
CREATE INDEX invoice_cases_priority_idx ON invoice_cases (priority, create_time DESC, id DESC);

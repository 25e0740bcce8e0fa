DROP TABLE case_event_retention;
DROP TRIGGER case_events_notify ON case_events;
DROP FUNCTION notify_case_events();
DROP FUNCTION lock_for_event(uuid);

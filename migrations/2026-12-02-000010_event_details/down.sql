ALTER TABLE invoice_cases DROP COLUMN assignment_group;

DELETE FROM case_events WHERE action IN (
    'UPDATE', 'ASSIGN', 'ACCEPT_SOLUTION', 'REJECT_SOLUTION', 'ADD_COMMENT', 'SLA_BREACHED');
ALTER DOMAIN event_action DROP CONSTRAINT event_action_check;
ALTER DOMAIN event_action ADD CONSTRAINT event_action_check CHECK (VALUE IN (
    'CREATE', 'ADD_LINE', 'REMOVE_LINE', 'SUBMIT', 'ASSIGN_TO_ME', 'REQUEST_INFORMATION',
    'INFORMATION_RECEIVED', 'PROPOSE_SOLUTION', 'CLOSE', 'CANCEL', 'SET_LINE_STATE'));

ALTER DOMAIN state_changes DROP CONSTRAINT state_changes_check;
ALTER DOMAIN state_changes ADD CONSTRAINT state_changes_check
    CHECK (jsonb_typeof(VALUE) = 'array' AND jsonb_array_length(VALUE) >= 1);

ALTER TABLE case_events DROP COLUMN details;

-- What the rest of the dispute workflow records.
--
--  * case_events.details: what an action changed besides states (the
--    fields an edit or an assignment changed), as a versioned JSON document
--    (see src/store/stored.rs); NULL for the events that have none.
--    Comments, updates and SLA breaches change no state, so their events'
--    `changes` may be empty.
--  * The actions of the workflow: UPDATE, ASSIGN, ACCEPT_SOLUTION,
--    REJECT_SOLUTION, ADD_COMMENT, SLA_BREACHED.
--  * invoice_cases.assignment_group: the group of agents a case is
--    assigned to.
ALTER TABLE case_events ADD COLUMN details jsonb;

ALTER DOMAIN state_changes DROP CONSTRAINT state_changes_check;
ALTER DOMAIN state_changes ADD CONSTRAINT state_changes_check
    CHECK (jsonb_typeof(VALUE) = 'array');

ALTER DOMAIN event_action DROP CONSTRAINT event_action_check;
ALTER DOMAIN event_action ADD CONSTRAINT event_action_check CHECK (VALUE IN (
    'CREATE', 'ADD_LINE', 'REMOVE_LINE', 'SUBMIT', 'ASSIGN_TO_ME', 'REQUEST_INFORMATION',
    'INFORMATION_RECEIVED', 'PROPOSE_SOLUTION', 'CLOSE', 'CANCEL', 'SET_LINE_STATE',
    'UPDATE', 'ASSIGN', 'ACCEPT_SOLUTION', 'REJECT_SOLUTION', 'ADD_COMMENT', 'SLA_BREACHED'));

ALTER TABLE invoice_cases ADD COLUMN assignment_group identifier;

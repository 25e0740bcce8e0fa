-- One row per committed action (SPEC §4), written in the action's
-- transaction: the audit trail and the source of every watch stream.
CREATE TABLE case_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The writing transaction. Ids commit out of order; streams read only
    -- below the oldest transaction still running (see src/watch).
    txid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    case_id     uuid NOT NULL REFERENCES invoice_cases (id),
    case_number text NOT NULL,
    account_id  text NOT NULL,
    action      text NOT NULL CHECK (action IN (
                    'CREATE', 'ADD_LINE', 'REMOVE_LINE', 'SUBMIT', 'ASSIGN_TO_ME',
                    'REQUEST_INFORMATION', 'INFORMATION_RECEIVED', 'PROPOSE_SOLUTION',
                    'CLOSE', 'CANCEL', 'SET_LINE_STATE')),
    actor       text NOT NULL CHECK (char_length(actor) BETWEEN 1 AND 255),
    occur_time  timestamptz NOT NULL,
    etag        text NOT NULL,
    -- [{"entity": "CASE"|"LINE", "id", "number", "cause", "from", "to"}, ...]
    changes     jsonb NOT NULL CHECK (jsonb_typeof(changes) = 'array' AND jsonb_array_length(changes) >= 1),
    comment     text CHECK (char_length(comment) <= 4000)
);

CREATE INDEX case_events_case_idx ON case_events (case_id, id);
CREATE INDEX case_events_txid_idx ON case_events (txid, id);
CREATE INDEX case_events_account_idx ON case_events (account_id, txid, id);
CREATE INDEX case_events_occur_time_idx ON case_events (occur_time);

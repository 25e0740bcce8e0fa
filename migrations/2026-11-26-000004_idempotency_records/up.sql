-- The first response of every mutating request that carried a request_id,
-- written in the action's transaction; a retry returns it unchanged.
CREATE TABLE idempotency_records (
    request_id  uuid PRIMARY KEY,
    -- Who sent it, which RPC, and a hash of the request: a reused id with
    -- another request is refused instead of answered with the wrong response.
    actor       text NOT NULL,
    method      text NOT NULL,
    fingerprint bytea NOT NULL,
    case_id     uuid NOT NULL REFERENCES invoice_cases (id),
    -- The case as the first call returned it.
    response    jsonb NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idempotency_records_create_time_idx ON idempotency_records (create_time);

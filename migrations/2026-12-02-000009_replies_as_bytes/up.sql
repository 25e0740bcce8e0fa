-- Idempotent replies are stored as the bytes of the response message the
-- first call sent (version 2, `reply`), not as the service's JSON form of
-- the case (version 1, `response`): a retry gets exactly what was sent,
-- whatever a later version of the service would make of the case. Records
-- written before keep their version 1 form, which is still read until
-- retention prunes them (see src/store/stored.rs).
ALTER TABLE idempotency_records
    ADD COLUMN reply bytea,
    ALTER COLUMN response DROP NOT NULL;

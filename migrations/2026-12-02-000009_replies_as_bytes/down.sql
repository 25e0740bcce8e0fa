DELETE FROM idempotency_records WHERE response IS NULL;
ALTER TABLE idempotency_records
    DROP COLUMN reply,
    ALTER COLUMN response SET NOT NULL;

-- Durable named subscriptions: a watch whose position PostgreSQL keeps
-- (see src/store/subscriptions.rs).
--
--  * A subscription keeps the filters and the start of the watch that
--    created it, and the position its subscriber last acknowledged. A
--    position is a stream position (src/store/event_log.rs): `(txid, id)`,
--    and, for a start after a snapshot (with_snapshot, from now), what that
--    snapshot shows of the transactions after it (its `xmax` and the
--    transactions it saw in progress). The snapshot part is the start's and
--    never changes; acknowledging moves only `(position_txid, position_id)`,
--    forward (the UPDATE's own condition).
--  * Names are one namespace (unique); `owner` is the token `sub` that
--    created it, counted for the per-owner limit.
--  * One table constraint (PostgreSQL reads every constraint again for each
--    statement that writes the table, and acknowledging writes it): the
--    position is never before the start, a snapshot lies after the start,
--    and only a snapshot lists transactions in progress.
CREATE DOMAIN subscription_name AS text CHECK (VALUE ~ '^[A-Za-z0-9._-]{1,64}$');
CREATE DOMAIN log_position AS bigint CHECK (VALUE >= 0);

CREATE TABLE subscriptions (
    id                   uuid PRIMARY KEY,
    name                 subscription_name NOT NULL UNIQUE,
    owner                actor NOT NULL,
    case_id              uuid,
    account_id           identifier,
    start_txid           log_position NOT NULL,
    start_id             log_position NOT NULL,
    snapshot_xmax        log_position,
    snapshot_in_progress bigint[] NOT NULL DEFAULT '{}',
    position_txid        log_position NOT NULL,
    position_id          log_position NOT NULL,
    create_time          timestamptz NOT NULL,
    acknowledge_time     timestamptz,

    CONSTRAINT subscription_is_consistent CHECK (
        (position_txid, position_id) >= (start_txid, start_id)
        AND (snapshot_xmax IS NULL OR snapshot_xmax > start_txid)
        AND (snapshot_xmax IS NOT NULL OR cardinality(snapshot_in_progress) = 0))
);

-- The per-owner limit counts an owner's subscriptions.
CREATE INDEX subscriptions_owner_idx ON subscriptions (owner);

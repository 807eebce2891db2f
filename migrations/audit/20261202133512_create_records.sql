-- The audit log: an append-only hash chain. Each record carries its sequence number and the
-- hash of the one before; `hash` = SHA-256(previous hash ‖ the record's RFC 8785 canonical
-- JSON), so changing, removing or reordering any record breaks every hash after it, and a
-- signed checkpoint of (seq, hash) catches a truncated tail.
CREATE TABLE audit_records (
    seq         bigint      PRIMARY KEY CHECK (seq > 0),
    -- The event's id (or the reporter's): a record is written once per id.
    event_id    uuid        NOT NULL UNIQUE,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL,
    -- The service that told (an event's source, or the reporting caller's service).
    source      text        NOT NULL,
    actor       text        NOT NULL,
    action      text        NOT NULL,
    target      text,
    -- From where: the client's address for a direct report, the event's source otherwise.
    origin      text,
    -- The payload, as its canonical JSON text (so the bytes hashed are the bytes kept).
    data        text        NOT NULL,
    prev_hash   bytea       NOT NULL CHECK (length(prev_hash) = 32),
    hash        bytea       NOT NULL CHECK (length(hash) = 32)
);
CREATE INDEX audit_records_actor ON audit_records (actor, seq);
CREATE INDEX audit_records_action ON audit_records (action, seq);
CREATE INDEX audit_records_target ON audit_records (target, seq);
CREATE INDEX audit_records_occurred ON audit_records (occurred_at, seq);

-- The chain's head: the last record's seq and hash, locked by each append so records are
-- chained one after another.
CREATE TABLE audit_head (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq  bigint  NOT NULL,
    hash bytea   NOT NULL
);
INSERT INTO audit_head (seq, hash) VALUES (0, '\x0000000000000000000000000000000000000000000000000000000000000000');

-- Signed checkpoints: the head at a moment, signed with the service's Ed25519 key.
CREATE TABLE audit_checkpoints (
    seq        bigint      PRIMARY KEY,
    hash       bytea       NOT NULL,
    signed_at  timestamptz NOT NULL,
    key_id     text        NOT NULL,
    public_key bytea       NOT NULL,
    signature  bytea       NOT NULL
);

-- The signing key when none is configured: generated once, kept here.
CREATE TABLE audit_keys (
    key_id     text        PRIMARY KEY,
    pkcs8      bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Append-only, whoever connects: the service's own role loses UPDATE, DELETE and TRUNCATE
-- on records and checkpoints, and triggers refuse them for any role a privilege would
-- still allow (a superuser must drop the triggers first, which `verify` then detects by the
-- broken chain).
REVOKE UPDATE, DELETE, TRUNCATE ON audit_records, audit_checkpoints FROM PUBLIC;
REVOKE UPDATE, DELETE, TRUNCATE ON audit_records, audit_checkpoints FROM CURRENT_USER;

CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

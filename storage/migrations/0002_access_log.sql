-- The access log: one row per attempt to touch a recording or administer the vault,
-- hash-chained and MACed by storage/audit.py. The database refuses to change history:
-- rows may be inserted, never updated, deleted or truncated. A superuser can still
-- switch the triggers off, which is why the chain, the MACs and the heads written to
-- object storage exist: tampering that the triggers cannot stop is detected by verify.
--
-- outcome:
--   allowed  the policy allowed it; written before any data leaves the vault
--   denied   the policy refused it (or sign-in failed)
--   ok       an allowed operation completed (for those whose completion matters: purge)
--   failed   an allowed operation did not complete (storage error, integrity failure)

CREATE TABLE access_log (
    seq          bigint PRIMARY KEY CHECK (seq > 0),
    at           timestamptz NOT NULL,
    actor        text NOT NULL,
    role         text NOT NULL,
    action       text NOT NULL,
    recording_id uuid,
    variant      text,
    reason       text CHECK (char_length(reason) <= 500),
    origin       text,
    outcome      text NOT NULL CHECK (outcome IN ('allowed', 'denied', 'ok', 'failed')),
    detail       text CHECK (char_length(detail) <= 200),
    prev_hash    bytea NOT NULL CHECK (octet_length(prev_hash) = 32),
    entry_hash   bytea NOT NULL CHECK (octet_length(entry_hash) = 32),
    mac          bytea NOT NULL CHECK (octet_length(mac) = 32)
);
CREATE INDEX access_log_actor ON access_log (actor, seq);
CREATE INDEX access_log_recording ON access_log (recording_id, seq)
    WHERE recording_id IS NOT NULL;
CREATE INDEX access_log_at ON access_log (at);

-- The chain's tip. Every append locks this one row (SELECT ... FOR UPDATE), so appends
-- from any number of processes and machines are serialised into one unbroken chain.
CREATE TABLE access_log_head (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    seq        bigint NOT NULL CHECK (seq >= 0),
    entry_hash bytea NOT NULL CHECK (octet_length(entry_hash) = 32)
);
INSERT INTO access_log_head (id, seq, entry_hash) VALUES (true, 0, decode(repeat('00', 32), 'hex'));

CREATE FUNCTION access_log_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'access_log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER access_log_no_update_delete
    BEFORE UPDATE OR DELETE ON access_log
    FOR EACH ROW EXECUTE FUNCTION access_log_refuse();
CREATE TRIGGER access_log_no_truncate
    BEFORE TRUNCATE ON access_log
    FOR EACH STATEMENT EXECUTE FUNCTION access_log_refuse();

-- The head row is updated by every append, but only ever forward by one, onto the entry
-- just inserted: rewinding it to hide deleted entries needs the triggers off, like every
-- other rewrite.
CREATE FUNCTION access_log_head_advance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.seq <> OLD.seq + 1 OR NOT EXISTS (
            SELECT 1 FROM access_log WHERE seq = NEW.seq AND entry_hash = NEW.entry_hash) THEN
        RAISE EXCEPTION 'access_log_head only advances by one entry, onto that entry'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER access_log_head_forward_only
    BEFORE UPDATE ON access_log_head
    FOR EACH ROW EXECUTE FUNCTION access_log_head_advance();
CREATE TRIGGER access_log_head_no_delete
    BEFORE DELETE ON access_log_head
    FOR EACH ROW EXECUTE FUNCTION access_log_refuse();
CREATE TRIGGER access_log_head_no_truncate
    BEFORE TRUNCATE ON access_log_head
    FOR EACH STATEMENT EXECUTE FUNCTION access_log_refuse();

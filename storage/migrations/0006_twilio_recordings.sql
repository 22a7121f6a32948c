-- Recordings Twilio told us about (recording status callbacks), until the vault holds them
-- and Twilio's copy is deleted: pending → registered (in the pipeline's encrypted spool)
-- → stored (the raw object is in S3, Twilio's copy deleted), or refused. The recording SID is the key, so a callback delivered
-- twice is one row. `lease_until` hands a row to one worker at a time; a worker that dies
-- lets its lease run out and another takes the row again. `encryption` is Twilio's
-- EncryptionDetails as sent (the content key in it is wrapped by our public key).
CREATE TABLE twilio_recordings (
    recording_sid  text PRIMARY KEY CHECK (recording_sid ~ '^RE[0-9a-f]{32}$'),
    call_id        uuid NOT NULL REFERENCES twilio_calls (call_id),
    encryption     jsonb,
    state          text NOT NULL DEFAULT 'pending'
                   CHECK (state IN ('pending', 'registered', 'stored', 'refused')),
    attempts       integer NOT NULL DEFAULT 0,
    lease_until    timestamptz NOT NULL DEFAULT now(),
    recording_id   uuid,
    error          text,
    created        timestamptz NOT NULL DEFAULT now(),
    updated        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX twilio_recordings_due ON twilio_recordings (lease_until)
    WHERE state IN ('pending', 'registered');

-- The vault's metadata: recordings, their encrypted objects and wrapped data keys,
-- users and roles, and the append-only, hash-chained access log.

CREATE TABLE recordings (
    id               uuid PRIMARY KEY,
    call_id          text UNIQUE,              -- the platform's call id: idempotency key
    agent            text,
    source_name      text NOT NULL,            -- file name only, never a path
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'processing', 'stored', 'failed', 'purged')),
    duration_seconds double precision,
    channels         integer,
    sample_rate      integer,
    verdict          jsonb,                    -- the IVR's verdict (issue 4), no secrets
    redaction        jsonb,                    -- labels and times of muted spans, no values
    error            text,                     -- a category, never a value
    retain_until     timestamptz,
    legal_hold       boolean NOT NULL DEFAULT false,
    hold_reason      text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    stored_at        timestamptz,
    purged_at        timestamptz
);
CREATE INDEX recordings_created ON recordings (created_at);

-- One row per stored object. The wrapped data key lives here, not in the object, so
-- key rotation re-wraps rows without touching audio, and a purge that nulls it
-- crypto-shreds every copy of the object at once.
CREATE TABLE objects (
    id               uuid PRIMARY KEY,         -- bound into the ciphertext header
    recording_id     uuid NOT NULL REFERENCES recordings (id),
    variant          text NOT NULL CHECK (variant IN ('raw', 'redacted', 'transcript')),
    s3_key           text NOT NULL,
    version_id       text,
    kek_id           text,
    wrapped_key      bytea,                    -- NULL once shredded
    plaintext_size   bigint,
    ciphertext_size  bigint,
    segment_size     integer NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'stored', 'shredded')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    stored_at        timestamptz,
    UNIQUE (recording_id, variant)
);

CREATE TABLE users (
    name          text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9._-]{1,63}$'),
    role          text NOT NULL CHECK (role IN ('agent', 'qa', 'compliance', 'admin')),
    password_hash text NOT NULL,
    disabled      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE vault_meta (
    key   text PRIMARY KEY,
    value jsonb NOT NULL
);

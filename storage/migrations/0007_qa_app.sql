-- The QA reviewers' web app (issue 6): browser sessions and API tokens, sign-in lockout,
-- compliance officers' reasons for playing an original, and QA scorecards.

-- One row per browser session (cookie) or machine client's bearer token. Only the
-- SHA-256 of the secret is kept, so a copy of this table signs nobody in. A browser
-- session also holds its CSRF token (not a credential on its own: it is useless without
-- the cookie) and ends when idle for too long or at its absolute end, whichever is first.
CREATE TABLE web_sessions (
    token_hash    bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    kind          text NOT NULL CHECK (kind IN ('browser', 'api')),
    user_name     text NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    csrf_token    text,
    label         text CHECK (label IS NULL OR length(label) <= 64),
    created_at    timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    CHECK (expires_at > created_at)
);
CREATE INDEX web_sessions_user ON web_sessions (user_name);
CREATE INDEX web_sessions_expires ON web_sessions (expires_at);

-- A compliance officer who gave a reason may play one recording's original within one
-- session until `expires_at`; the reason is in the access log with every byte range.
CREATE TABLE raw_grants (
    token_hash    bytea NOT NULL REFERENCES web_sessions (token_hash) ON DELETE CASCADE,
    recording_id  uuid NOT NULL REFERENCES recordings (id),
    reason        text NOT NULL,
    granted_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (token_hash, recording_id)
);

-- Lockout after repeated failed sign-ins, shared by every instance and kept across
-- restarts; only existing accounts have a row (unknown names are throttled in memory).
ALTER TABLE users ADD COLUMN failed_sign_ins integer NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN first_failure_at timestamptz;
ALTER TABLE users ADD COLUMN locked_until timestamptz;

-- One scorecard per recording and reviewer: the answers to the configured questions
-- (question id -> points), the score they add up to, and free-text notes (checked to
-- carry no long numbers, like a stated reason).
CREATE TABLE scorecards (
    recording_id  uuid NOT NULL REFERENCES recordings (id),
    reviewer      text NOT NULL REFERENCES users (name),
    answers       jsonb NOT NULL,
    score         double precision NOT NULL CHECK (score >= 0 AND score <= 100),
    notes         text NOT NULL DEFAULT '' CHECK (length(notes) <= 4000),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (recording_id, reviewer)
);
CREATE INDEX scorecards_recording ON scorecards (recording_id);

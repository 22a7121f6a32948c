-- Agent desk sign-ins (issue 4, the screen-pop): one row per bearer token handed to an
-- agent's desktop. Only the SHA-256 of the token is kept, so a copy of this table signs
-- nobody in. A row ends at `expires_at` or when revoked (sign-out); rows long past their
-- end are pruned by callvault/agent_desk.py.

CREATE TABLE agent_sessions (
    token_hash  bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    user_name   text NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    CHECK (expires_at > created_at)
);
CREATE INDEX agent_sessions_user ON agent_sessions (user_name);
CREATE INDEX agent_sessions_expires ON agent_sessions (expires_at);

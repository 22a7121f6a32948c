-- Customers for caller authentication (issue 4). No identifier is stored in the clear:
-- account numbers and phone numbers are found through keyed blind indexes
-- (HMAC-SHA256), and the phone and contact of record needed for call-backs and notices
-- are sealed with AES-256-GCM under a data key wrapped by the `customer` KEK.

CREATE TABLE customers (
    id              uuid PRIMARY KEY,          -- the opaque account reference
    account_index   bytea NOT NULL UNIQUE,
    phone_index     bytea NOT NULL,            -- several accounts may share a line
    phone_sealed    bytea NOT NULL,
    contact_sealed  bytea NOT NULL,            -- where notices go (phone or e-mail)
    pin_hash        text NOT NULL,
    locked_until    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customers_phone ON customers (phone_index);

-- Failed PIN attempts, shared by every callvault instance (lockout across calls).
CREATE TABLE pin_failures (
    id           bigserial PRIMARY KEY,
    customer_id  uuid NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pin_failures_recent ON pin_failures (customer_id, at);

-- Notices to customers at their contact of record. Never a PIN, a number or any CPNI in
-- the clear: the customer reference, the kind of notice, and the destination sealed as
-- it was when the notice was made (a change of contact is told to the OLD contact).
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    customer_id  uuid NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    destination_sealed bytea NOT NULL,
    kind         text NOT NULL
                 CHECK (kind IN ('pin_changed', 'contact_changed', 'account_locked',
                                 'callback_requested')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz,
    attempts     integer NOT NULL DEFAULT 0
);
CREATE INDEX outbox_unsent ON outbox (created_at) WHERE sent_at IS NULL;

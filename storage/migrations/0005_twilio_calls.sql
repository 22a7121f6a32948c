-- Twilio calls: the IVR machine of each call between webhooks, so any instance behind a
-- load balancer can answer the next one. `seq` numbers the steps: a webhook carrying an
-- older step is a retry or arrives out of order and gets `last_twiml` again, changing
-- nothing. The machine snapshot never holds typed keys (IvrMachine.snapshot refuses).
CREATE TABLE twilio_calls (
    call_id     uuid PRIMARY KEY,
    call_sid    text UNIQUE CHECK (call_sid ~ '^CA[0-9a-f]{32}$'),
    kind        text NOT NULL CHECK (kind IN ('inbound', 'callback')),
    machine     jsonb NOT NULL,
    seq         integer NOT NULL DEFAULT 0,
    last_twiml  text NOT NULL DEFAULT '',
    deadlines   jsonb NOT NULL DEFAULT '{}',
    agent       text,
    created     timestamptz NOT NULL DEFAULT now(),
    updated     timestamptz NOT NULL DEFAULT now()
);

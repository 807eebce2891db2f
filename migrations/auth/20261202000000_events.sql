-- The event backbone (service_kit::events): its outbox and inbox replace the first outbox,
-- which nothing read. Reset requests still waiting in it are carried over as the events that
-- announce them now, so none is lost.

CREATE TABLE event_outbox (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     uuid        NOT NULL UNIQUE,
    event_type   text        NOT NULL,
    subject      text,
    envelope     text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX event_outbox_unpublished ON event_outbox (id) WHERE published_at IS NULL;
CREATE INDEX event_outbox_published ON event_outbox (published_at) WHERE published_at IS NOT NULL;

CREATE TABLE event_inbox (
    consumer   text        NOT NULL,
    event_id   uuid        NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

INSERT INTO event_outbox (event_id, event_type, subject, envelope, created_at)
SELECT id,
       'auth.password_reset.requested.v1',
       payload->>'user_id',
       jsonb_build_object(
           'specversion', '1.0',
           'id', id,
           'source', '/gravity/auth',
           'type', 'auth.password_reset.requested.v1',
           'subject', payload->>'user_id',
           'time', created_at,
           'datacontenttype', 'application/json',
           'data', payload
       )::text,
       created_at
FROM outbox
WHERE delivered_at IS NULL AND topic = 'auth.password_reset_requested'
ORDER BY created_at;

DROP TABLE outbox;

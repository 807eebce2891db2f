-- The event backbone's tables (service_kit::events), the same in every service.

-- Transactional outbox: an event is written in the transaction that makes the change it
-- reports, and the relay publishes it once that transaction has committed.
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

-- Inbox: the events each consumer has handled, written in the transaction of the handler's
-- effect, so a redelivered event finds its id here and changes nothing twice.
CREATE TABLE event_inbox (
    consumer   text        NOT NULL,
    event_id   uuid        NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

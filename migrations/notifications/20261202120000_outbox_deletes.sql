-- The relay deletes an event's row once the broker has confirmed it, instead of marking it
-- published: the outbox holds only what is still to be published, and keeps no event (a
-- reset token included) past its publication. Rows are read by `id` alone, so the other
-- indexes only cost every write.
DELETE FROM event_outbox WHERE published_at IS NOT NULL;
DROP INDEX event_outbox_published;
DROP INDEX event_outbox_unpublished;
ALTER TABLE event_outbox DROP COLUMN published_at;
ALTER TABLE event_outbox DROP CONSTRAINT event_outbox_event_id_key;

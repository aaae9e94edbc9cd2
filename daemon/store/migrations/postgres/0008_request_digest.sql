-- A digest of the API request that made a notification under a key its client chose (the
-- Idempotency-Key header or the idempotency_key field): the same key sent again with another
-- request is refused (422 idempotency_key_reused) instead of answered as a duplicate. NULL where
-- backchannel made the key (alerts, mail, its own notifications) and for rows from before.
ALTER TABLE notifications ADD COLUMN request_digest text;

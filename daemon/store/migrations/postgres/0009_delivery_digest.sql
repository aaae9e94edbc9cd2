-- The digest a delivery was last sent in, written as the digest goes out: a digest cut short by a
-- crash, a restart or another node's takeover of the lease is sent again as the same group, under
-- the same id (its idempotency key), instead of being grouped anew. NULL for every other delivery.
ALTER TABLE deliveries ADD COLUMN digest text;

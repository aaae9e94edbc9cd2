-- Escalation and acknowledgement: a plan may be steps in time (JSON, NULL for a failover list);
-- an acknowledgement stops the steps not yet sent. The ack code is typed back in an SMS reply.
ALTER TABLE notifications ADD COLUMN escalation TEXT;   -- JSON [{"after_s": 0, "channels": [...]}, ...]
ALTER TABLE notifications ADD COLUMN ack_code TEXT;     -- the id's last 6 characters, upper case
ALTER TABLE notifications ADD COLUMN acknowledged_at REAL;
ALTER TABLE notifications ADD COLUMN acknowledged_by TEXT;
ALTER TABLE notifications ADD COLUMN acknowledged_via TEXT;
UPDATE notifications SET ack_code = upper(substr(id, -6));
-- Codes are resolved among the unacknowledged only: the index stays as small as that set.
CREATE INDEX notifications_ack_code ON notifications (ack_code) WHERE acknowledged_at IS NULL;

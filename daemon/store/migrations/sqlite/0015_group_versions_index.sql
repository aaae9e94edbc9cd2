-- Retention deletes a pruned notification's group versions by its id (and a group's lineage is
-- looked up by a version's id): without this, each lookup reads the whole table.
CREATE INDEX group_versions_notification ON group_versions (notification_id);

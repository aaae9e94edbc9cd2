-- The versions of an alert group (Alertmanager's or Grafana's groupKey, per: group): a new version
-- closes the others still open. Only group notifications have rows; nothing is ever deleted.
CREATE TABLE group_versions (
    lineage TEXT NOT NULL,
    notification_id TEXT NOT NULL REFERENCES notifications (id),
    PRIMARY KEY (lineage, notification_id)
) WITHOUT ROWID;

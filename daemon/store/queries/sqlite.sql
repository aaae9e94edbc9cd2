-- name: find_by_key
SELECT id, request_digest, created_at FROM notifications WHERE idempotency_key = ?;

-- name: current_mode
SELECT mode FROM provider WHERE id = 1;

-- name: current_state
SELECT state FROM provider WHERE id = 1;

-- name: insert_notification
INSERT INTO notifications (id, idempotency_key, created_at, severity, subject, body, source, recipients,
                           labels, mail_from, raw, status, route, mode, plan, escalation, ack_code, step,
                           pinned, request_digest, updated_at)
VALUES (:id, :idempotency_key, :created_at, :severity, :subject, :body, :source, :recipients,
        :labels, :mail_from, :raw, :status, :route, :mode, :plan, :escalation, :ack_code, 0, :pinned,
        :request_digest, :now);

-- name: insert_delivery
INSERT INTO deliveries (notification_id, mode, route, step, channel, state, attempts, next_attempt_at,
                        created_at, updated_at)
VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?);

-- name: claim
UPDATE deliveries
SET state = 'in_flight', claimed_until = :lease_until, attempts = attempts + 1, updated_at = :now
WHERE id IN (
    SELECT d.id FROM deliveries d
    WHERE d.state = 'pending' AND d.channel = :channel AND d.next_attempt_at <= :now
      AND d.mode = (SELECT mode FROM provider WHERE id = 1)
    ORDER BY d.next_attempt_at, d.id
    LIMIT :limit)
RETURNING *;

-- name: acknowledged_among
-- The ids as one JSON array.
SELECT id FROM notifications WHERE id IN (SELECT value FROM json_each(?)) AND acknowledged_at IS NOT NULL;

-- name: notification_by_id
SELECT * FROM notifications WHERE id = ?;

-- name: notifications_by_ids
-- The ids as one JSON array: a claim's notifications in one statement.
SELECT * FROM notifications WHERE id IN (SELECT value FROM json_each(?));

-- name: delivery_by_id
SELECT * FROM deliveries WHERE id = ?;

-- name: insert_attempt
INSERT INTO attempts (delivery_id, notification_id, channel, attempt, started_at, finished_at, outcome, detail)
VALUES (?, ?, ?, ?, ?, ?, ?, ?);

-- name: mark_delivered
UPDATE deliveries SET state = 'delivered', claimed_until = NULL, remote_id = ?, last_error = NULL,
    updated_at = ? WHERE id = ?;

-- name: mark_retry
UPDATE deliveries SET state = 'pending', claimed_until = NULL, next_attempt_at = ?, last_error = ?,
    updated_at = ? WHERE id = ?;

-- name: keep_remote_id
-- what a retried or failed attempt did post before it failed (a message to some of its targets)
UPDATE deliveries SET remote_id = ? WHERE id = ?;

-- name: mark_failed
UPDATE deliveries SET state = 'failed', claimed_until = NULL, last_error = ?, updated_at = ? WHERE id = ?;

-- name: set_notification_status
UPDATE notifications SET status = ?, updated_at = ? WHERE id = ?;

-- name: advance_step
UPDATE notifications SET step = ?, updated_at = ? WHERE id = ?;

-- name: release_claims
-- A claim whose notification was acknowledged meanwhile is not sent again, nor a step of an
-- escalation that reached someone planned for the mode no longer in force (supersede_stale_escalations).
UPDATE deliveries
SET claimed_until = NULL, updated_at = ?,
    state = CASE WHEN EXISTS (SELECT 1 FROM notifications n WHERE n.id = deliveries.notification_id
                              AND (n.acknowledged_at IS NOT NULL
                                   OR (n.escalation IS NOT NULL AND n.status NOT IN ('pending', 'held')
                                       AND deliveries.mode != (SELECT mode FROM provider WHERE id = 1))))
                 THEN 'superseded' ELSE 'pending' END
WHERE state = 'in_flight';

-- name: mark_digest
UPDATE deliveries SET digest = :digest
WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'in_flight';

-- name: renew
-- The ids as one JSON array; one daemon uses a SQLite store, so an unexpired claim is its own.
UPDATE deliveries SET claimed_until = :lease_until, updated_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'in_flight' AND claimed_until >= :now
RETURNING id;

-- name: release_expired
-- Leases that ran out (a send stuck past its lease): pending again, or superseded once acknowledged
-- (or stale, as in release_claims).
UPDATE deliveries
SET claimed_until = NULL, updated_at = :now,
    state = CASE WHEN EXISTS (SELECT 1 FROM notifications n WHERE n.id = deliveries.notification_id
                              AND (n.acknowledged_at IS NOT NULL
                                   OR (n.escalation IS NOT NULL AND n.status NOT IN ('pending', 'held')
                                       AND deliveries.mode != (SELECT mode FROM provider WHERE id = 1))))
                 THEN 'superseded' ELSE 'pending' END
WHERE state = 'in_flight' AND claimed_until < :now;

-- name: due
-- Per channel with pending deliveries, the earliest of the mode in force (NULL: none of that mode).
-- A loose index scan over deliveries_due: a few seeks per channel however long the backlog. The
-- dispatcher asks on every pass, and a GROUP BY read every pending row (and each row, for its
-- mode): under a burst of thousands that was most of the cost of a pass.
WITH RECURSIVE channels(channel) AS (
    SELECT min(channel) FROM deliveries WHERE state = 'pending'
    UNION ALL
    SELECT (SELECT min(d.channel) FROM deliveries d WHERE d.state = 'pending' AND d.channel > c.channel)
    FROM channels c WHERE c.channel IS NOT NULL
)
SELECT c.channel, (SELECT d.next_attempt_at FROM deliveries d
                   WHERE d.state = 'pending' AND d.channel = c.channel
                     AND d.mode = (SELECT mode FROM provider WHERE id = 1)
                   ORDER BY d.next_attempt_at LIMIT 1)
FROM channels c WHERE c.channel IS NOT NULL;

-- name: reroute_candidates
-- A page after the id given, in id order (ids are ULIDs: creation order), of those planned for the
-- mode given (the other one than the provider's), through notifications_unsent_mode.
SELECT n.* FROM notifications n INDEXED BY notifications_unsent_mode
WHERE n.status IN ('pending', 'held') AND n.pinned IS NULL AND n.mode = ? AND n.id > ?
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.notification_id = n.id AND d.state = 'in_flight')
ORDER BY n.id
LIMIT ?;

-- name: repin_candidates
SELECT n.* FROM notifications n
WHERE n.status IN ('pending', 'held') AND n.mode != ? AND n.pinned IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.notification_id = n.id AND d.state = 'in_flight')
ORDER BY n.created_at
LIMIT ?;

-- name: reroute_check
SELECT n.status, n.mode,
       EXISTS (SELECT 1 FROM deliveries d WHERE d.notification_id = n.id AND d.state = 'in_flight')
FROM notifications n WHERE n.id = ?;

-- name: carry_over_notification
UPDATE notifications SET mode = ?, updated_at = ? WHERE id = ?;

-- name: carry_over_deliveries
UPDATE deliveries SET mode = ?, updated_at = ? WHERE notification_id = ? AND state = 'pending';

-- name: supersede_pending
UPDATE deliveries SET state = 'superseded', updated_at = ? WHERE notification_id = ? AND state = 'pending';

-- name: replan
UPDATE notifications SET status = ?, route = ?, mode = ?, plan = ?, escalation = ?, step = 0, updated_at = ?
WHERE id = ?;

-- name: save_provider
UPDATE provider SET state = ?, mode = ?, snapshot = ?, updated_at = ? WHERE id = 1;

-- name: insert_event
INSERT INTO provider_events (at, from_state, to_state, cause) VALUES (?, ?, ?, ?);

-- name: insert_check
INSERT INTO check_results (check_name, status, reason, latency_s, at) VALUES (?, ?, ?, ?, ?);

-- name: prune_checks
DELETE FROM check_results WHERE at < ?;

-- name: provider
SELECT state, mode, snapshot FROM provider WHERE id = 1;

-- name: recent_events
SELECT at, from_state, to_state, cause FROM provider_events ORDER BY id DESC LIMIT ?;

-- name: recent_checks
SELECT check_name, status, reason, latency_s, at FROM check_results ORDER BY id DESC LIMIT ?;

-- name: notification_counts
SELECT status, count(*) FROM notifications GROUP BY status;

-- name: delivery_counts
SELECT state, count(*) FROM deliveries WHERE state IN ('pending', 'in_flight') GROUP BY state;

-- name: oldest_pending
SELECT min(created_at) FROM notifications WHERE status IN ('pending', 'held');

-- name: deliveries_of
SELECT * FROM deliveries WHERE notification_id = ? ORDER BY id;

-- name: attempts_of
SELECT delivery_id, channel, attempt, started_at, finished_at, outcome, detail FROM attempts
WHERE notification_id = ? ORDER BY id;

-- name: channel_health
SELECT a.channel,
       max(CASE WHEN a.outcome = 'delivered' THEN a.finished_at END) AS last_success_at,
       max(CASE WHEN a.outcome IN ('retry', 'failed') THEN a.finished_at END) AS last_failure_at,
       (SELECT f.detail FROM attempts f WHERE f.channel = a.channel AND f.outcome IN ('retry', 'failed')
        ORDER BY f.id DESC LIMIT 1) AS last_error,
       (SELECT count(*) FROM attempts c WHERE c.channel = a.channel AND c.outcome IN ('retry', 'failed')
          AND c.id > coalesce((SELECT max(s.id) FROM attempts s
                               WHERE s.channel = a.channel AND s.outcome = 'delivered'), 0))
         AS consecutive_failures
FROM attempts a
GROUP BY a.channel;

-- name: deliveries_by_remote_id
-- remote_id may list several ids, comma-separated (one per message part); several deliveries may
-- share one (every notification an SMS digest carried).
SELECT * FROM deliveries
WHERE channel = ? AND (remote_id = ? OR ',' || remote_id || ',' LIKE '%,' || ? || ',%')
ORDER BY id;

-- name: reopen_notification
-- An acknowledged notification stays closed: someone took it on, there is nothing left to send.
-- So does one that another delivery reached (an escalation's other channel or step): reopened, the
-- recovery's sweep or a reload would re-plan it and page again.
UPDATE notifications SET status = 'pending', updated_at = ?
WHERE id = ? AND status = 'delivered' AND acknowledged_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM deliveries d
                  WHERE d.notification_id = notifications.id AND d.state = 'delivered');

-- name: unsent
SELECT n.* FROM notifications n INDEXED BY notifications_unsent
WHERE n.status IN ('pending', 'held') AND n.id > ? AND n.pinned IS NULL
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.notification_id = n.id AND d.state = 'in_flight')
ORDER BY n.id
LIMIT ?;

-- name: drill_ids
SELECT id FROM notifications WHERE source = 'drill' AND json_extract(labels, '$.drill') = ? ORDER BY id;

-- name: latest_drill
SELECT json_extract(labels, '$.drill') FROM notifications WHERE source = 'drill'
ORDER BY created_at DESC, id DESC LIMIT 1;

-- name: events_since
SELECT at, from_state, to_state, cause FROM provider_events WHERE at >= ? ORDER BY at;

-- name: checks_since
SELECT check_name, status, reason, latency_s, at FROM check_results WHERE at >= ? ORDER BY at;

-- name: recent_notification_ids
SELECT id FROM notifications ORDER BY created_at DESC, id DESC LIMIT ?;

-- name: list_ids
SELECT id FROM notifications
WHERE (:status IS NULL OR status = :status) AND (:severity IS NULL OR severity = :severity)
  AND (:since IS NULL OR created_at >= :since) AND (:before IS NULL OR id < :before)
ORDER BY id DESC
LIMIT :limit;

-- name: cancel_notification
UPDATE notifications SET status = 'cancelled', updated_at = ? WHERE id = ?;

-- name: thread_of
-- the delivered message, or (any_state) also what a send posted before it failed on other targets
SELECT d.remote_id FROM deliveries d JOIN notifications n ON n.id = d.notification_id
WHERE n.idempotency_key = ? AND d.channel = ? AND d.remote_id IS NOT NULL
    AND (d.state = 'delivered' OR ?)
ORDER BY d.id DESC LIMIT 1;

-- name: hurry_step
-- A step of an escalation failed for good: the next step is due now, not at its time.
UPDATE deliveries SET next_attempt_at = min(next_attempt_at, :now), updated_at = :now
WHERE notification_id = :id AND mode = :mode AND step = :step AND state = 'pending';

-- name: live_deliveries
-- What of an escalation may still reach someone, or already did.
SELECT count(*) FROM deliveries
WHERE notification_id = ? AND mode = ? AND state IN ('pending', 'in_flight', 'delivered');

-- name: acknowledge
UPDATE notifications
SET acknowledged_at = :now, acknowledged_by = :by, acknowledged_via = :via, updated_at = :now,
    status = CASE WHEN status IN ('pending', 'held') THEN 'acknowledged' ELSE status END
WHERE id = :id;

-- name: last_delivery_of
SELECT * FROM deliveries WHERE notification_id = ? ORDER BY id DESC LIMIT 1;

-- name: by_ack_code
-- Open escalations only (the predicate of ack_code_taken): a code never stops anything else.
SELECT id FROM notifications
WHERE ack_code = ? AND escalation IS NOT NULL AND acknowledged_at IS NULL AND status != 'cancelled'
ORDER BY created_at DESC, id DESC LIMIT 1;

-- name: by_superseded_ack_code
-- A group version a newer one closed ('group update'): its code, as texted, takes on the group
-- (Store.acknowledge). Read only when no open escalation has the code: the index is for those.
SELECT id FROM notifications
WHERE ack_code = ? AND escalation IS NOT NULL AND acknowledged_via = 'group update' AND status != 'cancelled'
ORDER BY created_at DESC, id DESC LIMIT 1;

-- name: ack_code_taken
SELECT 1 FROM notifications
WHERE ack_code = ? AND escalation IS NOT NULL AND acknowledged_at IS NULL AND status != 'cancelled'
LIMIT 1;

-- name: give_ack_code
-- Re-planned into an escalation: a code of its own, unless it had one (already sent with it).
UPDATE notifications SET ack_code = ? WHERE id = ? AND ack_code IS NULL;

-- name: supersede_delivery
UPDATE deliveries SET state = 'superseded', claimed_until = NULL, last_error = ?, updated_at = ? WHERE id = ?;

-- name: supersede_mode_of
UPDATE deliveries SET state = 'superseded', updated_at = ?
WHERE notification_id = ? AND mode = ? AND state = 'pending';

-- name: supersede_stale_escalations
-- The mode changed: escalation steps planned for the old mode that already reached someone stop
-- (unsent notifications are re-planned by the rerouter instead).
UPDATE deliveries SET state = 'superseded', updated_at = :now
WHERE state = 'pending' AND mode != :mode
  AND EXISTS (SELECT 1 FROM notifications n WHERE n.id = deliveries.notification_id
              AND n.escalation IS NOT NULL AND n.status NOT IN ('pending', 'held'));

-- name: group_of
SELECT lineage FROM group_versions WHERE notification_id = ?;

-- name: group_versions_after
-- The versions of this one's group committed after it, oldest first (latest_group_version's order).
SELECT n.id, n.labels FROM group_versions mine
JOIN notifications v ON v.id = mine.notification_id
JOIN group_versions g ON g.lineage = mine.lineage
JOIN notifications n ON n.id = g.notification_id
WHERE mine.notification_id = ?
  AND (n.created_at > v.created_at OR (n.created_at = v.created_at AND n.id > v.id))
ORDER BY n.created_at, n.id;

-- name: open_group_versions
-- The group's versions that may still be closed (codec.acknowledgeable, not yet acknowledged).
SELECT g.notification_id FROM group_versions g JOIN notifications n ON n.id = g.notification_id
WHERE g.lineage = ? AND n.acknowledged_at IS NULL
  AND (n.status IN ('pending', 'held') OR (n.escalation IS NOT NULL AND n.status != 'cancelled'))
ORDER BY n.created_at, n.id;

-- name: latest_group_version
SELECT n.id, n.idempotency_key, n.labels, n.acknowledged_by, n.acknowledged_via FROM group_versions g JOIN notifications n ON n.id = g.notification_id
WHERE g.lineage = ? ORDER BY n.created_at DESC, n.id DESC LIMIT 1;

-- name: insert_group_version
INSERT INTO group_versions (lineage, notification_id) VALUES (?, ?);

-- name: put_back_unreadable
-- A claimed delivery whose notification's row cannot be read (daemon/store/unreadable.py) is
-- pending again, due later, its claim not counted as an attempt: nothing was tried.
UPDATE deliveries SET state = 'pending', claimed_until = NULL, attempts = max(attempts - 1, 0),
    next_attempt_at = :retry_at, last_error = :detail, updated_at = :now
WHERE id = :id AND state = 'in_flight';

-- name: owe_replan
INSERT INTO owed_replans (routes, owed_at) VALUES (?, ?)
ON CONFLICT (routes) DO UPDATE SET owed_at = excluded.owed_at;

-- name: owed_replans
SELECT routes FROM owed_replans;

-- name: plan_routes
INSERT INTO planned_routes (id, routes) VALUES (1, ?)
ON CONFLICT (id) DO UPDATE SET routes = excluded.routes;

-- name: planned_routes
SELECT routes FROM planned_routes WHERE id = 1;

-- name: settle_replans
-- The digests as one JSON array.
DELETE FROM owed_replans WHERE routes IN (SELECT value FROM json_each(?));

-- name: probe_read
SELECT id FROM provider WHERE id = 1;

-- name: probe_commit
-- The row is rewritten: its page is appended to the WAL at the commit and synced, as a small
-- accept's would be (on a full disk both fail once the WAL must grow), and nothing changes.
UPDATE provider SET id = id WHERE id = 1;

-- name: prunable
-- Finished notifications last changed before :before, oldest first (by the created_at index:
-- created_at <= updated_at), none with a delivery still to send or being sent. INDEXED BY: left
-- to itself SQLite read every finished notification by status and sorted them, 0.3 s of the
-- writer's time per batch at 200,000, 1 ms this way.
SELECT n.id FROM notifications n INDEXED BY notifications_created
WHERE n.created_at < :before AND n.updated_at < :before
  AND n.status IN ('delivered', 'failed', 'cancelled', 'acknowledged')
  AND NOT EXISTS (SELECT 1 FROM deliveries d
                  WHERE d.notification_id = n.id AND d.state IN ('pending', 'in_flight', 'held'))
ORDER BY n.created_at LIMIT :limit;

-- name: prune_attempts
DELETE FROM attempts WHERE notification_id IN (SELECT value FROM json_each(?));

-- name: prune_deliveries
DELETE FROM deliveries WHERE notification_id IN (SELECT value FROM json_each(?));

-- name: prune_group_versions
DELETE FROM group_versions WHERE notification_id IN (SELECT value FROM json_each(?));

-- name: prune_notifications
DELETE FROM notifications WHERE id IN (SELECT value FROM json_each(?));

-- Named queries for the PostgreSQL store (psycopg placeholders). Leases use the database's clock
-- (statement_timestamp()); due times (next_attempt_at) are the nodes' clocks, as in SQLite.

-- name: current_mode_shared
-- FOR SHARE: a mode change (save_provider) waits for accepts that read the old mode to commit,
-- so the rerouter that follows the change sees them (SQLite gets this from BEGIN IMMEDIATE).
SELECT mode, state FROM provider WHERE id = 1 FOR SHARE;

-- name: insert_notification
INSERT INTO notifications (id, idempotency_key, created_at, severity, subject, body, source, recipients,
                           labels, mail_from, raw, status, route, mode, plan, escalation, ack_code, step,
                           pinned, request_digest, updated_at)
VALUES (%(id)s, %(idempotency_key)s, %(created_at)s, %(severity)s, %(subject)s, %(body)s, %(source)s,
        %(recipients)s, %(labels)s, %(mail_from)s, %(raw)s, %(status)s, %(route)s, %(mode)s, %(plan)s,
        %(escalation)s, %(ack_code)s, 0, %(pinned)s, %(request_digest)s, %(now)s)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id;

-- name: find_by_key
SELECT id, request_digest, created_at FROM notifications WHERE idempotency_key = %s;

-- name: find_by_keys
SELECT idempotency_key, id, request_digest FROM notifications WHERE idempotency_key = ANY(%s);

-- name: insert_delivery
INSERT INTO deliveries (notification_id, mode, route, step, channel, state, attempts, next_attempt_at,
                        created_at, updated_at)
VALUES (%s, %s, %s, %s, %s, 'pending', 0, %s, %s, %s);

-- name: notify_work
SELECT pg_notify(%s, %s);

-- name: claim
-- SKIP LOCKED: nodes claiming at once each take different rows instead of queueing on the same
-- ones. A lease that ran out (a node presumed dead) is first made pending by release_expired.
WITH picked AS (
    SELECT d.id FROM deliveries d
    WHERE d.channel = %(channel)s
      AND d.mode = (SELECT mode FROM provider WHERE id = 1)
      AND d.state = 'pending' AND d.next_attempt_at <= %(now)s
    ORDER BY d.next_attempt_at, d.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED)
UPDATE deliveries d
SET state = 'in_flight', claimed_until = statement_timestamp() + %(lease)s, claimed_by = %(node)s,
    attempts = d.attempts + 1, updated_at = %(now)s
FROM picked WHERE d.id = picked.id
RETURNING d.*;

-- name: notifications_by_ids
SELECT * FROM notifications WHERE id = ANY(%s);

-- name: stranded
-- Pending deliveries of the mode in force on a channel no node took since before (not locked:
-- take_stranded locks each after its notification, the order recording keeps).
SELECT d.id FROM deliveries d
WHERE d.channel = %(channel)s
  AND d.mode = (SELECT mode FROM provider WHERE id = 1)
  AND d.state = 'pending' AND d.next_attempt_at <= %(before)s
ORDER BY d.next_attempt_at, d.id
LIMIT %(limit)s;

-- name: take_stranded
-- Claimed by this node for the failure recorded in the same transaction, if still stranded.
UPDATE deliveries
SET state = 'in_flight', claimed_until = statement_timestamp(), claimed_by = %(node)s,
    attempts = attempts + 1, updated_at = %(now)s
WHERE id = %(id)s AND state = 'pending' AND next_attempt_at <= %(before)s
  AND mode = (SELECT mode FROM provider WHERE id = 1)
RETURNING id;

-- name: lock_notification_of_delivery
-- Every write to a notification and its deliveries locks the notification first, then the
-- deliveries: one order for record and reroute, so they never deadlock.
SELECT n.* FROM notifications n JOIN deliveries d ON d.notification_id = n.id
WHERE d.id = %s FOR UPDATE OF n;

-- name: lock_delivery
SELECT * FROM deliveries WHERE id = %s FOR UPDATE;

-- name: insert_attempt
INSERT INTO attempts (delivery_id, notification_id, channel, attempt, started_at, finished_at, outcome, detail)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s);

-- name: mark_delivered
UPDATE deliveries SET state = 'delivered', claimed_until = NULL, claimed_by = NULL, remote_id = %s,
    last_error = NULL, updated_at = %s WHERE id = %s;

-- name: mark_retry
UPDATE deliveries SET state = 'pending', claimed_until = NULL, claimed_by = NULL, next_attempt_at = %s,
    last_error = %s, updated_at = %s WHERE id = %s;

-- name: keep_remote_id
-- what a retried or failed attempt did post before it failed (a message to some of its targets)
UPDATE deliveries SET remote_id = %s WHERE id = %s;

-- name: mark_failed
UPDATE deliveries SET state = 'failed', claimed_until = NULL, claimed_by = NULL, last_error = %s,
    updated_at = %s WHERE id = %s;

-- name: set_notification_status
UPDATE notifications SET status = %s, updated_at = %s WHERE id = %s;

-- name: advance_step
UPDATE notifications SET step = %s, updated_at = %s WHERE id = %s;

-- name: release_claims
-- Only leases that ran out, and this node's own claims from before its restart: other live
-- nodes' claims are theirs until their lease ends. A claim whose notification was acknowledged
-- meanwhile is not sent again, nor a step of an escalation that reached someone planned for the mode
-- no longer in force (supersede_stale_escalations).
UPDATE deliveries d SET claimed_until = NULL, claimed_by = NULL, updated_at = %(now)s,
    state = CASE WHEN EXISTS (SELECT 1 FROM notifications n WHERE n.id = d.notification_id
                              AND (n.acknowledged_at IS NOT NULL
                                   OR (n.escalation IS NOT NULL AND n.status NOT IN ('pending', 'held')
                                       AND d.mode != (SELECT mode FROM provider WHERE id = 1))))
                 THEN 'superseded' ELSE 'pending' END
WHERE d.state = 'in_flight' AND (d.claimed_until < statement_timestamp() OR d.claimed_by = %(node)s);

-- name: mark_digest
UPDATE deliveries SET digest = %(digest)s WHERE id = ANY(%(ids)s) AND state = 'in_flight';

-- name: renew
-- Only this node's unexpired claims: one that ran out may be another node's by now.
UPDATE deliveries SET claimed_until = statement_timestamp() + %(lease)s, updated_at = %(now)s
WHERE id = ANY(%(ids)s) AND state = 'in_flight' AND claimed_by = %(node)s
  AND claimed_until >= statement_timestamp()
RETURNING id;

-- name: release_expired
-- Leases that ran out, whatever their mode: the node that held them is presumed dead. Pending again
-- (the rerouter re-plans one whose mode has changed since), or superseded once acknowledged or stale
-- (as in release_claims).
UPDATE deliveries d SET claimed_until = NULL, claimed_by = NULL, updated_at = %(now)s,
    state = CASE WHEN EXISTS (SELECT 1 FROM notifications n WHERE n.id = d.notification_id
                              AND (n.acknowledged_at IS NOT NULL
                                   OR (n.escalation IS NOT NULL AND n.status NOT IN ('pending', 'held')
                                       AND d.mode != (SELECT mode FROM provider WHERE id = 1))))
                 THEN 'superseded' ELSE 'pending' END
WHERE d.state = 'in_flight' AND d.claimed_until < statement_timestamp();

-- name: acknowledged_among
SELECT id FROM notifications WHERE id = ANY(%s) AND acknowledged_at IS NOT NULL;

-- name: due
SELECT channel, min(next_attempt_at) AS due_at FROM deliveries
WHERE mode = (SELECT mode FROM provider WHERE id = 1) AND state = 'pending'
GROUP BY channel;

-- name: reroute_candidates
-- A page after the id given, in id order (ids are ULIDs: creation order), of those planned for the
-- mode given (the other one than the provider's), through notifications_unsent_mode.
SELECT n.* FROM notifications n
WHERE n.status IN ('pending', 'held') AND n.pinned IS NULL AND n.mode = %s AND n.id > %s
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.notification_id = n.id AND d.state = 'in_flight')
ORDER BY n.id
LIMIT %s;

-- name: repin_candidates
SELECT n.* FROM notifications n
WHERE n.status IN ('pending', 'held') AND n.mode != %s AND n.pinned IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.notification_id = n.id AND d.state = 'in_flight')
ORDER BY n.created_at
LIMIT %s;

-- name: lock_notification
SELECT status, mode FROM notifications WHERE id = %s FOR UPDATE;

-- name: lock_deliveries_of
SELECT state FROM deliveries WHERE notification_id = %s FOR UPDATE;

-- name: carry_over_notification
UPDATE notifications SET mode = %s, updated_at = %s WHERE id = %s;

-- name: carry_over_deliveries
UPDATE deliveries SET mode = %s, updated_at = %s WHERE notification_id = %s AND state = 'pending';

-- name: supersede_pending
UPDATE deliveries SET state = 'superseded', updated_at = %s WHERE notification_id = %s AND state = 'pending';

-- name: replan
UPDATE notifications SET status = %s, route = %s, mode = %s, plan = %s, escalation = %s, step = 0,
    updated_at = %s
WHERE id = %s;

-- name: save_provider
UPDATE provider SET state = %s, mode = %s, snapshot = %s, updated_at = %s WHERE id = 1;

-- name: insert_event
INSERT INTO provider_events (at, from_state, to_state, cause) VALUES (%s, %s, %s, %s);

-- name: save_provider_fenced
-- The fencing token is checked in the same statement as the write: a node deposed while it was
-- paused (or cut off) updates nothing. FOR SHARE makes a concurrent takeover wait for this write,
-- or this write see the takeover (READ COMMITTED re-reads the locked row).
UPDATE provider SET state = %(state)s, mode = %(mode)s, snapshot = %(snapshot)s, updated_at = %(now)s
WHERE id = 1 AND EXISTS (SELECT 1 FROM leader l WHERE l.id = 1 AND l.node = %(node)s
                         AND l.version = %(version)s AND l.expires_at > now() FOR SHARE);

-- name: insert_event_fenced
INSERT INTO provider_events (at, from_state, to_state, cause)
SELECT %(at)s, %(from_state)s, %(to_state)s, %(cause)s
WHERE EXISTS (SELECT 1 FROM leader l WHERE l.id = 1 AND l.node = %(node)s
              AND l.version = %(version)s AND l.expires_at > now() FOR SHARE);

-- name: idle_in_transaction_timeout
-- For the session (a pool connection, set when it is opened): the server ends a session left idle
-- inside a transaction this long, releasing its locks.
SELECT set_config('idle_in_transaction_session_timeout', %s, false);

-- name: lock_timeout
-- For the current transaction only: a statement waiting this long for a lock fails (LockNotAvailable).
SELECT set_config('lock_timeout', %s, true);

-- name: acquire_leader
-- One statement, on the database's clock: the holder renews with its token; anyone takes a lease
-- that has run out, and taking it bumps the version (the next fencing token).
UPDATE leader SET
    version = CASE WHEN node = %(node)s AND version = %(version)s THEN version ELSE version + 1 END,
    node = %(node)s,
    expires_at = now() + %(lease)s
WHERE id = 1 AND ((node = %(node)s AND version = %(version)s) OR expires_at <= now())
RETURNING version;

-- name: resign_leader
-- A clean stop hands over at once instead of after the lease.
UPDATE leader SET expires_at = 'epoch' WHERE id = 1 AND node = %(node)s AND version = %(version)s;

-- name: leader
SELECT node, version, expires_at, now() AS db_now FROM leader WHERE id = 1;

-- name: insert_check
INSERT INTO check_results (check_name, status, reason, latency_s, at, node) VALUES (%s, %s, %s, %s, %s, %s);

-- name: node_checks
-- Each node's latest result per check since a time: `backchannel status` per node.
SELECT DISTINCT ON (node, check_name) node, check_name, status, reason, latency_s, at FROM check_results
WHERE at >= %s
ORDER BY node, check_name, at DESC, id DESC;

-- name: prune_checks
DELETE FROM check_results WHERE at < %s;

-- name: provider
SELECT state, mode, snapshot FROM provider WHERE id = 1;

-- name: recent_events
SELECT at, from_state, to_state, cause FROM provider_events ORDER BY id DESC LIMIT %s;

-- name: recent_checks
SELECT check_name, status, reason, latency_s, at FROM check_results ORDER BY id DESC LIMIT %s;

-- name: notification_counts
SELECT status, count(*) AS n FROM notifications GROUP BY status;

-- name: delivery_counts
SELECT state, count(*) AS n FROM deliveries WHERE state IN ('pending', 'in_flight') GROUP BY state;

-- name: oldest_pending
SELECT min(created_at) AS at FROM notifications WHERE status IN ('pending', 'held');

-- name: notification_by_id
SELECT * FROM notifications WHERE id = %s;

-- name: deliveries_of
SELECT * FROM deliveries WHERE notification_id = %s ORDER BY id;

-- name: attempts_of
SELECT delivery_id, channel, attempt, started_at, finished_at, outcome, detail FROM attempts
WHERE notification_id = %s ORDER BY id;

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
-- share one (every notification an SMS digest carried). In id order, the order record locks in.
SELECT id FROM deliveries
WHERE channel = %(channel)s
  AND (remote_id = %(remote_id)s OR %(remote_id)s = ANY (string_to_array(remote_id, ',')))
ORDER BY id;

-- name: reopen_notification
-- An acknowledged notification stays closed: someone took it on, there is nothing left to send.
-- So does one that another delivery reached (an escalation's other channel or step): reopened, the
-- recovery's sweep or a reload would re-plan it and page again.
UPDATE notifications SET status = 'pending', updated_at = %s
WHERE id = %s AND status = 'delivered' AND acknowledged_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM deliveries d
                  WHERE d.notification_id = notifications.id AND d.state = 'delivered');

-- name: unsent
SELECT n.* FROM notifications n
WHERE n.status IN ('pending', 'held') AND n.id > %s AND n.pinned IS NULL
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.notification_id = n.id AND d.state = 'in_flight')
ORDER BY n.id
LIMIT %s;

-- name: drill_ids
SELECT id FROM notifications WHERE source = 'drill' AND labels ->> 'drill' = %s ORDER BY id;

-- name: latest_drill
SELECT labels ->> 'drill' AS drill FROM notifications WHERE source = 'drill'
ORDER BY created_at DESC, id DESC LIMIT 1;

-- name: events_since
SELECT at, from_state, to_state, cause FROM provider_events WHERE at >= %s ORDER BY at;

-- name: checks_since
SELECT check_name, status, reason, latency_s, at FROM check_results WHERE at >= %s ORDER BY at;

-- name: recent_notification_ids
SELECT id FROM notifications ORDER BY created_at DESC, id DESC LIMIT %s;

-- name: list_ids
SELECT id FROM notifications
WHERE (%(status)s::text IS NULL OR status = %(status)s) AND (%(severity)s::text IS NULL OR severity = %(severity)s)
  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s) AND (%(before)s::text IS NULL OR id < %(before)s)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: cancel_notification
UPDATE notifications SET status = 'cancelled', updated_at = %s WHERE id = %s;

-- name: thread_of
-- the delivered message, or (any_state) also what a send posted before it failed on other targets
SELECT d.remote_id FROM deliveries d JOIN notifications n ON n.id = d.notification_id
WHERE n.idempotency_key = %s AND d.channel = %s AND d.remote_id IS NOT NULL
    AND (d.state = 'delivered' OR %s)
ORDER BY d.id DESC LIMIT 1;

-- name: hurry_step
-- A step of an escalation failed for good: the next step is due now, not at its time.
UPDATE deliveries SET next_attempt_at = LEAST(next_attempt_at, %(now)s), updated_at = %(now)s
WHERE notification_id = %(id)s AND mode = %(mode)s AND step = %(step)s AND state = 'pending';

-- name: live_deliveries
-- What of an escalation may still reach someone, or already did.
SELECT count(*) AS n FROM deliveries
WHERE notification_id = %s AND mode = %s AND state IN ('pending', 'in_flight', 'delivered');

-- name: lock_for_ack
SELECT status, escalation, acknowledged_at, acknowledged_via FROM notifications WHERE id = %s FOR UPDATE;

-- name: acknowledge
UPDATE notifications
SET acknowledged_at = %(now)s, acknowledged_by = %(by)s, acknowledged_via = %(via)s, updated_at = %(now)s,
    status = CASE WHEN status IN ('pending', 'held') THEN 'acknowledged' ELSE status END
WHERE id = %(id)s;

-- name: last_delivery_of
SELECT * FROM deliveries WHERE notification_id = %s ORDER BY id DESC LIMIT 1;

-- name: by_ack_code
-- Open escalations only (the predicate of ack_code_taken): a code never stops anything else.
SELECT id FROM notifications
WHERE ack_code = %s AND escalation IS NOT NULL AND acknowledged_at IS NULL AND status != 'cancelled'
ORDER BY created_at DESC, id DESC LIMIT 1;

-- name: by_superseded_ack_code
-- A group version a newer one closed ('group update'): its code, as texted, takes on the group
-- (Store.acknowledge). Read only when no open escalation has the code: the index is for those.
SELECT id FROM notifications
WHERE ack_code = %s AND escalation IS NOT NULL AND acknowledged_via = 'group update' AND status != 'cancelled'
ORDER BY created_at DESC, id DESC LIMIT 1;

-- name: ack_code_taken
SELECT 1 AS taken FROM notifications
WHERE ack_code = %s AND escalation IS NOT NULL AND acknowledged_at IS NULL AND status != 'cancelled'
LIMIT 1;

-- name: give_ack_code
-- Re-planned into an escalation: a code of its own, unless it had one (already sent with it).
UPDATE notifications SET ack_code = %s WHERE id = %s AND ack_code IS NULL;

-- name: supersede_delivery
UPDATE deliveries SET state = 'superseded', claimed_until = NULL, claimed_by = NULL, last_error = %s,
    updated_at = %s WHERE id = %s;

-- name: supersede_mode_of
UPDATE deliveries SET state = 'superseded', updated_at = %s
WHERE notification_id = %s AND mode = %s AND state = 'pending';

-- name: lock_provider
-- save_provider locks the provider row before any delivery row (bulk supersede): the order of
-- accept, record and reroute, which read the mode FOR SHARE first, so none waits in a cycle.
SELECT mode FROM provider WHERE id = 1 FOR UPDATE;

-- name: supersede_stale_escalations
-- The mode changed: escalation steps planned for the old mode that already reached someone stop
-- (unsent notifications are re-planned by the rerouter instead).
UPDATE deliveries d SET state = 'superseded', updated_at = %(now)s
WHERE d.state = 'pending' AND d.mode != %(mode)s
  AND EXISTS (SELECT 1 FROM notifications n WHERE n.id = d.notification_id
              AND n.escalation IS NOT NULL AND n.status NOT IN ('pending', 'held'));

-- name: lock_group
-- One version of a group at a time: two versions committed at once would each miss the other.
SELECT pg_advisory_xact_lock(hashtextextended(%s, 0));

-- name: group_of
SELECT lineage FROM group_versions WHERE notification_id = %s;

-- name: group_versions_after
-- The versions of this one's group committed after it, oldest first (latest_group_version's order).
SELECT n.id, n.labels FROM group_versions mine
JOIN notifications v ON v.id = mine.notification_id
JOIN group_versions g ON g.lineage = mine.lineage
JOIN notifications n ON n.id = g.notification_id
WHERE mine.notification_id = %s
  AND (n.created_at > v.created_at OR (n.created_at = v.created_at AND n.id > v.id))
ORDER BY n.created_at, n.id;

-- name: open_group_versions
-- The group's versions that may still be closed (codec.acknowledgeable, not yet acknowledged).
SELECT g.notification_id FROM group_versions g JOIN notifications n ON n.id = g.notification_id
WHERE g.lineage = %s AND n.acknowledged_at IS NULL
  AND (n.status IN ('pending', 'held') OR (n.escalation IS NOT NULL AND n.status != 'cancelled'))
ORDER BY n.created_at, n.id;

-- name: latest_group_version
SELECT n.id, n.idempotency_key, n.labels, n.acknowledged_by, n.acknowledged_via FROM group_versions g JOIN notifications n ON n.id = g.notification_id
WHERE g.lineage = %s ORDER BY n.created_at DESC, n.id DESC LIMIT 1;

-- name: insert_group_version
INSERT INTO group_versions (lineage, notification_id) VALUES (%s, %s);

-- name: put_back_unreadable
-- A claimed delivery whose notification's row cannot be read (daemon/store/unreadable.py) is
-- pending again, due later, its claim not counted as an attempt: nothing was tried. Only this
-- node's claim; no other row is locked.
UPDATE deliveries SET state = 'pending', claimed_until = NULL, claimed_by = NULL,
    attempts = greatest(attempts - 1, 0), next_attempt_at = %(retry_at)s, last_error = %(detail)s,
    updated_at = %(now)s
WHERE id = %(id)s AND state = 'in_flight' AND claimed_by = %(node)s;

-- name: owe_replan
INSERT INTO owed_replans (routes, owed_at) VALUES (%s, %s)
ON CONFLICT (routes) DO UPDATE SET owed_at = excluded.owed_at;

-- name: owed_replans
SELECT routes FROM owed_replans;

-- name: plan_routes
INSERT INTO planned_routes (id, routes) VALUES (1, %s)
ON CONFLICT (id) DO UPDATE SET routes = excluded.routes;

-- name: planned_routes
SELECT routes FROM planned_routes WHERE id = 1;

-- name: settle_replans
DELETE FROM owed_replans WHERE routes = ANY(%s);

-- name: probe_read
SELECT 1;

-- name: probe_commit
-- A transaction id assigned makes the commit write and flush a commit record: the server
-- takes a durable commit (not a standby, its WAL writable) without a row written or locked.
SELECT txid_current();

-- name: take_node_name
-- The name is ours if nobody holds it, or its holder has not kept it fresh for %(stale)s, or
-- %(dead)s names that holder (a process of this host that no longer runs). No row: held. Also
-- how its holder keeps it fresh every round (its started_at kept).
INSERT INTO node_names (name, instance, started_at, seen_at)
VALUES (%(node)s, %(instance)s, now(), now())
ON CONFLICT (name) DO UPDATE SET instance = excluded.instance, seen_at = now(),
    started_at = CASE WHEN node_names.instance = excluded.instance THEN node_names.started_at ELSE now() END
WHERE node_names.instance = %(instance)s OR node_names.instance = %(dead)s
   OR node_names.seen_at < now() - %(stale)s
RETURNING instance;

-- name: node_name_holder
SELECT instance, started_at, seen_at, extract(epoch FROM now() - seen_at) AS age_s
FROM node_names WHERE name = %(node)s;

-- name: give_node_name
DELETE FROM node_names WHERE name = %(node)s AND instance = %(instance)s;

-- name: prunable
-- As SQLite's: finished, last changed before %(before)s, nothing left to send; oldest first.
SELECT n.id FROM notifications n
WHERE n.created_at < %(before)s AND n.updated_at < %(before)s
  AND n.status IN ('delivered', 'failed', 'cancelled', 'acknowledged')
  AND NOT EXISTS (SELECT 1 FROM deliveries d
                  WHERE d.notification_id = n.id AND d.state IN ('pending', 'in_flight', 'held'))
ORDER BY n.created_at LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: prune_attempts
DELETE FROM attempts WHERE notification_id = ANY(%s);

-- name: prune_deliveries
DELETE FROM deliveries WHERE notification_id = ANY(%s);

-- name: prune_group_versions
DELETE FROM group_versions WHERE notification_id = ANY(%s);

-- name: prune_notifications
DELETE FROM notifications WHERE id = ANY(%s);

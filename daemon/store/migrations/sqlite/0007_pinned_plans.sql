-- Plans made by backchannel itself rather than by the routes (a drill's, a recovery announcement's
-- to one channel, a catch-up's): both modes' plans, as JSON, so a mode change moves such a
-- notification to its own plan for the new mode and neither the routes nor a policy reload re-plan it.
ALTER TABLE notifications ADD COLUMN pinned TEXT;

-- Those still unsent from before: a drill's message and a recovery copy (one channel in both modes),
-- a catch-up waiting to be emailed (held during an outage). A catch-up held already has lost its
-- steps: the routes plan it at the recovery, as before.
UPDATE notifications
SET pinned = json_object(
    'healthy', json_object('route', route, 'defer', json('false'), 'steps', json(plan), 'escalation', NULL),
    'outage', json_object('route', route, 'defer', json('false'), 'steps', json(plan), 'escalation', NULL))
WHERE status = 'pending' AND escalation IS NULL
  AND ((route = 'drill' AND source = 'drill') OR (route = 'announce' AND source = 'backchannel'));

UPDATE notifications
SET pinned = json_object(
    'healthy', json_object('route', route, 'defer', json('false'), 'steps', json(plan), 'escalation', NULL),
    'outage', json_object('route', route, 'defer', json('true'), 'steps', json('[]'), 'escalation', NULL))
WHERE status = 'pending' AND mode = 'healthy' AND escalation IS NULL
  AND route = 'catch-up' AND source = 'backchannel';

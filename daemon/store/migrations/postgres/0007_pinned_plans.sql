-- Plans made by backchannel itself rather than by the routes (a drill's, a recovery announcement's
-- to one channel, a catch-up's): both modes' plans, as JSON, so a mode change moves such a
-- notification to its own plan for the new mode and neither the routes nor a policy reload re-plan it.
ALTER TABLE notifications ADD COLUMN pinned jsonb;  -- {"healthy": {...}, "outage": {...}}

-- Those still unsent from before: a drill's message and a recovery copy (one channel in both modes),
-- a catch-up waiting to be emailed (held during an outage). A catch-up held already has lost its
-- steps: the routes plan it at the recovery, as before.
UPDATE notifications
SET pinned = jsonb_build_object(
    'healthy', jsonb_build_object('route', route, 'defer', false, 'steps', plan, 'escalation', NULL),
    'outage', jsonb_build_object('route', route, 'defer', false, 'steps', plan, 'escalation', NULL))
WHERE status = 'pending' AND escalation IS NULL
  AND ((route = 'drill' AND source = 'drill') OR (route = 'announce' AND source = 'backchannel'));

UPDATE notifications
SET pinned = jsonb_build_object(
    'healthy', jsonb_build_object('route', route, 'defer', false, 'steps', plan, 'escalation', NULL),
    'outage', jsonb_build_object('route', route, 'defer', true, 'steps', '[]'::jsonb, 'escalation', NULL))
WHERE status = 'pending' AND mode = 'healthy' AND escalation IS NULL
  AND route = 'catch-up' AND source = 'backchannel';

-- Plans made by backchannel itself rather than by the routes (a drill's, a recovery announcement's
-- to one channel, a catch-up's): both modes' plans, as JSON, so a mode change moves such a
-- notification to its own plan for the new mode and neither the routes nor a policy reload re-plan it.
ALTER TABLE notifications ADD COLUMN pinned jsonb;  -- {"healthy": {...}, "outage": {...}}

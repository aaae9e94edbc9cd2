-- The latest drill, which /metrics (every scrape) and status read: without it every read went
-- through the notifications newest first until a drill's, all of them when no drill ever ran
-- (40 ms with 200,000 notifications, growing with the store).
CREATE INDEX notifications_drills ON notifications (created_at, id) WHERE source = 'drill';

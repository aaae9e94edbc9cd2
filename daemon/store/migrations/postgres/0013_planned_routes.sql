-- The digest of the routes the unsent notifications were last planned by (Config.policy_digest),
-- in one row, written with each owed re-plan: a node starting with routes that differ from it
-- (the file edited while it was stopped, or a reload whose owed re-plan a crash kept from being
-- stored) owes the re-plan a reload would have owed. Nodes rolling out a new file one at a time
-- each owe it by their own routes, as with owed_replans.
CREATE TABLE planned_routes (
    id     integer PRIMARY KEY CHECK (id = 1),
    routes text NOT NULL
);

-- The digest of the routes the unsent notifications were last planned by (Config.policy_digest),
-- in one row, written with each owed re-plan: a start whose routes differ from it (the file
-- edited while the daemon was stopped, or a reload whose owed re-plan a crash kept from being
-- stored) owes the re-plan a reload would have owed.
CREATE TABLE planned_routes (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    routes TEXT NOT NULL
);

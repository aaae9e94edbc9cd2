-- The re-plans a policy reload owes the unsent notifications, one per digest of the reloaded
-- routes: stored before the re-plan starts and deleted once it has walked them all, so that a
-- daemon killed in between (or stopped: the walk ends after the page in hand) does it again at
-- its next start instead of leaving the backlog on the old routes' plans.
CREATE TABLE owed_replans (
    routes  TEXT PRIMARY KEY,  -- the routes' digest (Config.policy_digest)
    owed_at REAL NOT NULL
);

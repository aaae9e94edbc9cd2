-- The re-plans a policy reload owes the unsent notifications, one per digest of the reloaded
-- routes: stored before the re-plan starts and deleted once it has walked them all, so that a
-- node killed in between (or stopped: the walk ends after the page in hand) does it again at its
-- next start, or a node with the same routes does it when it takes the lead, instead of leaving
-- the backlog on the old routes' plans. Keyed by digest: nodes rolling out a new file one at a
-- time each owe the re-plan by their own routes, never another's.
CREATE TABLE owed_replans (
    routes  text PRIMARY KEY,  -- the routes' digest (Config.policy_digest)
    owed_at timestamptz NOT NULL
);

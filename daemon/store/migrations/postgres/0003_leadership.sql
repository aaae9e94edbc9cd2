-- High availability: one leader at a time, and check results from every node (vantage point).
-- The lease's expiry is set and compared with the database's clock (now()), never a node's; the
-- version changes with every change of holder and fences the leader's writes (see leader_fenced).
CREATE TABLE leader (
    id         integer PRIMARY KEY CHECK (id = 1),
    node       text,
    version    bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
INSERT INTO leader (id, node, version, expires_at) VALUES (1, NULL, 0, 'epoch');

-- Results from before this migration were the only node's: they keep an empty name.
ALTER TABLE check_results ADD COLUMN node text NOT NULL DEFAULT '';
CREATE INDEX check_results_node ON check_results (check_name, node, at);

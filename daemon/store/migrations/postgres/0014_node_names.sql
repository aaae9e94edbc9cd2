-- Which running process holds each node name. Claims, check results (votes) and the lease are
-- kept under a node's name, so two processes started with one name (a configuration copied from
-- node to node) would release each other's claims at start and vote as one node. A node takes
-- its name at start when no other instance has kept it fresh (seen_at, the database's clock),
-- keeps it fresh every leadership round and gives it back when it stops.
CREATE TABLE node_names (
    name       text PRIMARY KEY,
    instance   text NOT NULL,
    started_at timestamptz NOT NULL,
    seen_at    timestamptz NOT NULL
);

-- Reads of check results across every check by time: each node's latest per check (leadership,
-- /v1/status), the status page's timeline, and the prune that follows every stored result.
-- (check_name, at) cannot serve them: at 207,000 rows (two days of 3 nodes x 4 checks every 10 s)
-- the per-node query scanned the table, 11-14 ms; by time, 0.06 ms for the last minute.
CREATE INDEX check_results_time ON check_results (at);

-- Finished tasks kept for retention cost nothing until they are due to go.
-- prune_finished used to walk the whole table in seq order, filtering on
-- finished_at, on every prune round of every replica (and at each start):
-- with a million finished rows, a second of database time a minute per
-- replica, and a 25 % slower drain while a replica starts. This index holds
-- only finished tasks, by finish time, so a prune reads the rows it deletes
-- and stops at the first that is not old enough. (Built while the migration
-- holds its lock: on a very large table, writes wait for the build.)
CREATE INDEX tasks_finished ON tasks (finished_at)
    WHERE state IN ('SUCCEEDED', 'DEAD', 'CANCELLED');

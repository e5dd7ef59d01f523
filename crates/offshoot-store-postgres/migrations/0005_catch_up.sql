-- Production's catch-up: what each step of a catch-up run does to its asset, said for people
-- (`promoted (from feature-x, run 7)`, `built (changed; never built in a branch)`), and for a
-- promotion the branch materialization it takes (by value, like the provenance's reads: no
-- foreign key). Steps of other runs have neither. A merged branch's teardown may also be
-- `held` (the deployments.teardown text) until the catch-up has taken what it can.
ALTER TABLE run_steps ADD COLUMN action TEXT;
ALTER TABLE run_steps ADD COLUMN promoted_from BIGINT;

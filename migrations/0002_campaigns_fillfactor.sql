-- Every grant updates its campaign's row, thousands of times a second in a flash
-- sale. Leave 90% of each page free so those updates stay HOT (no index entry per
-- version); the table holds few rows, so the space costs nothing. voucherd also
-- vacuums this table itself every few seconds (src/maintenance.rs).
ALTER TABLE campaigns SET (fillfactor = 10);

-- Classic hot-row counter: all clients update one row.
UPDATE hot SET n = n + 1 WHERE id = 1;

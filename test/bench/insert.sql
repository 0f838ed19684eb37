-- One row per event into a logged, indexed table (compare: events mode).
INSERT INTO ev (k, d) VALUES (1, 1);

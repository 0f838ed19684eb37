-- The hand-written slotted counter users write today: 100 slots of key 1 (fillfactor 10).
INSERT INTO t VALUES (1, (random() * 99)::int, 1) ON CONFLICT (key, slot) DO UPDATE SET n = t.n + 1;

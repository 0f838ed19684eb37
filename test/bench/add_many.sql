-- counter.add_many with 100 keys drawn uniformly from k1..k10000: the keys' values grow by 100 per call.
-- delta: 100
SELECT counter.add_many(:c, ARRAY(SELECT 'k' || (1 + floor(random() * 10000))::int FROM generate_series(1, 100)));

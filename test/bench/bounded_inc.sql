-- +1 on the hot key of bounded counter :c (run with bounded_dec.sql at equal weights: random +1/-1).
-- delta: 1
SELECT counter.add(:c, 'k', 1);

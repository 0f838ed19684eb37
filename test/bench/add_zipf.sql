-- counter.add on keys k1..k10000 of counter :c, chosen with a Zipf distribution (s = 1.1).
\set k random_zipfian(1, 10000, 1.1)
SELECT counter.add(:c, 'k' || :k);

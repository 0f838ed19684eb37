-- counter.like (membership counter :c): a member of 1..1000000, at random, likes a key k1..k10000 chosen with a Zipf distribution (s = 1.1); mostly new members, a few likes again.
\set k random_zipfian(1, 10000, 1.1)
\set m random(1, 1000000)
SELECT counter."like"(:c, 'k' || :k, 'u' || :m);

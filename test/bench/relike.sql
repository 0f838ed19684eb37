-- counter.like (membership counter :c) of a member u1..u1000 who has liked key 'k' already: counted once, nothing changes.
-- delta: 0
\set m random(1, 1000)
SELECT counter."like"(:c, 'k', 'u' || :m);

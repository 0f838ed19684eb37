-- Primary-key lookup of a random row of a 10k-row table (compare: counter.value).
\set id random(1, 10000)
SELECT v FROM pk WHERE id = :id;

-- The 10 largest keys of counter :c (10k keys).
SELECT * FROM counter.top(:c, 10);

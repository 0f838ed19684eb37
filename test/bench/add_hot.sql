-- counter.add on one hot key of counter :c (pgbench -D c=NAME).
SELECT counter.add(:c, 'k');

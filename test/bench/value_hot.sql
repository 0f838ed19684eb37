-- counter.value of the hot key of counter :c (compare: primary-key SELECT).
SELECT counter.value(:c, 'k');

-- One hot key on a slots-mode counter.
SELECT counter.add('hot_slots', 'k');

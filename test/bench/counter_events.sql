-- One hot key on an events-mode counter.
SELECT counter.add('hot_events', 'k');

-- Round-trip floor: no table access, no WAL.
SELECT 1;

-- Durable-commit floor: each transaction writes and flushes one WAL record.
SELECT pg_logical_emit_message(true, 'x', 'y');

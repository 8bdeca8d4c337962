-- The ledger names the Ollama server that answered each call (see the PostgreSQL file).
ALTER TABLE usage ADD COLUMN server TEXT;

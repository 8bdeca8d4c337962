-- Every change the replicas' caches depend on is announced by the database itself, whoever makes
-- it: lmsvr's commands NOTIFY in their own transactions already, but an operator's UPDATE in psql
-- or a script did not, and a replica's cached key then stayed usable until its TTL ran out. With
-- these triggers a change to what a key lookup returns (hash, rotation, revocation, expiry,
-- scope, owner) or to any price row notifies `lmsvr_changes` in the committing transaction. The
-- same payload NOTIFYed twice in one transaction (lmsvr's own and the trigger's) is delivered once.
-- Updates of other columns (the last-use time, limits: read by the hold, not cached) notify nothing.
-- A TRUNCATE of either table notifies `flush` (replicas drop everything cached). Because of them, a
-- replica's own marker coming back on its listener confirms that no cached key or price changed
-- before it was sent (ChangeConfirmer), which is what lets replicas keep idle entries cached past
-- the TTL. Writes that fire no trigger (session_replication_role = replica, disabled triggers,
-- pg_restore --disable-triggers) are not announced: send NOTIFY lmsvr_changes, 'flush' after them.
CREATE FUNCTION lmsvr_notify_key_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('lmsvr_changes', 'key:' || OLD.id);
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_notify_update AFTER UPDATE ON api_keys FOR EACH ROW
    WHEN (OLD.key_hash IS DISTINCT FROM NEW.key_hash
          OR OLD.previous_hash IS DISTINCT FROM NEW.previous_hash
          OR OLD.previous_expires_us IS DISTINCT FROM NEW.previous_expires_us
          OR OLD.revoked_us IS DISTINCT FROM NEW.revoked_us
          OR OLD.expires_us IS DISTINCT FROM NEW.expires_us
          OR OLD.apis IS DISTINCT FROM NEW.apis
          OR OLD.models IS DISTINCT FROM NEW.models
          OR OLD.customer_id IS DISTINCT FROM NEW.customer_id
          OR OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION lmsvr_notify_key_change();

CREATE TRIGGER api_keys_notify_delete AFTER DELETE ON api_keys FOR EACH ROW
    EXECUTE FUNCTION lmsvr_notify_key_change();

CREATE FUNCTION lmsvr_notify_price_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('lmsvr_changes', 'price:' || OLD.model);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('lmsvr_changes', 'price:' || NEW.model);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER model_prices_notify AFTER INSERT OR UPDATE OR DELETE ON model_prices FOR EACH ROW
    EXECUTE FUNCTION lmsvr_notify_price_change();

CREATE FUNCTION lmsvr_notify_flush() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('lmsvr_changes', 'flush');
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_notify_truncate AFTER TRUNCATE ON api_keys FOR EACH STATEMENT
    EXECUTE FUNCTION lmsvr_notify_flush();

CREATE TRIGGER model_prices_notify_truncate AFTER TRUNCATE ON model_prices FOR EACH STATEMENT
    EXECUTE FUNCTION lmsvr_notify_flush();

-- The first response is the earliest reply that went out after the contact's first message (018),
-- whichever reply is stored last. The session functions (013, 015) only set it while it is unset,
-- and take any message of ours as a reply: a reply processed after a later one (WAHA retries,
-- drained spills, parallel processors) did not lower it, and one of ours that arrived already
-- failed (WAHA ack -1) counted as an answer, as did one that failed after it was stored. After
-- each message of ours is stored, and when one fails, the session's first response is found again
-- if this message could change it: it is at or before the first response so far, or there is
-- none. Most replies come after the first response, and cost one primary-key read.
CREATE FUNCTION messages_first_response() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
  v_first timestamptz;
  v_contact timestamptz;
  v_at timestamptz;
BEGIN
  SELECT s.first_response_at, s.first_contact_message_at INTO v_first, v_contact FROM sessions s WHERE s.id = NEW.session_id;
  IF v_contact IS NULL OR v_contact > NEW."timestamp" OR v_first < NEW."timestamp" THEN
    RETURN NULL; -- no question yet, a message before it, or a reply after the first response
  END IF;
  -- Read again under the lock (the storing transaction holds it already; a failing ack may not).
  SELECT s.first_response_at, s.first_contact_message_at INTO v_first, v_contact FROM sessions s WHERE s.id = NEW.session_id FOR UPDATE;
  SELECT min(m."timestamp") INTO v_at FROM messages m
  WHERE m.session_id = NEW.session_id AND m.from_me AND m.status NOT IN ('queued', 'failed') AND m."timestamp" >= v_contact;
  IF v_at IS DISTINCT FROM v_first THEN
    UPDATE sessions SET first_response_at = v_at,
      first_response_seconds = CASE WHEN v_at IS NULL THEN NULL ELSE floor(extract(epoch FROM v_at - v_contact))::int END
    WHERE id = NEW.session_id;
  END IF;
  RETURN NULL;
END
$fn$;
CREATE TRIGGER messages_first_response
  AFTER INSERT ON messages
  FOR EACH ROW WHEN (NEW.from_me AND NEW.session_id IS NOT NULL AND NEW.status <> 'queued')
  EXECUTE FUNCTION messages_first_response();
CREATE TRIGGER messages_first_response_failed
  AFTER UPDATE OF status ON messages
  FOR EACH ROW WHEN (NEW.from_me AND NEW.session_id IS NOT NULL AND NEW.status = 'failed' AND OLD.status <> 'failed')
  EXECUTE FUNCTION messages_first_response();

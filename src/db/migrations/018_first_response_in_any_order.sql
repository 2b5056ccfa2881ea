-- A session's first response is the first reply that went out after the contact's first message,
-- whatever order the two were processed in. The session functions (013, 015) set it when a reply
-- comes after the contact's first message is known; when the contact's first message is learnt
-- later, or turns out earlier (a reply processed before the question it answers: WAHA retries,
-- drained spills, parallel processors), the first response is found again among the replies
-- already stored. Queued or failed replies are not answers (as for customer_wait_seconds).
CREATE FUNCTION sessions_first_response() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  SELECT min(m."timestamp") INTO NEW.first_response_at FROM messages m
  WHERE m.session_id = NEW.id AND m.from_me AND m.status NOT IN ('queued', 'failed')
    AND m."timestamp" >= NEW.first_contact_message_at;
  NEW.first_response_seconds := CASE WHEN NEW.first_response_at IS NULL THEN NULL
    ELSE floor(extract(epoch FROM NEW.first_response_at - NEW.first_contact_message_at))::int END;
  RETURN NEW;
END
$fn$;
CREATE TRIGGER sessions_first_response
  BEFORE UPDATE OF first_contact_message_at ON sessions
  FOR EACH ROW WHEN (NEW.first_contact_message_at IS NOT NULL AND NEW.first_contact_message_at IS DISTINCT FROM OLD.first_contact_message_at)
  EXECUTE FUNCTION sessions_first_response();
